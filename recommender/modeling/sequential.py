"""A sequential family: a SASRec-style causal transformer (Kang & McAuley, 2018) in JAX/Flax, trained with optax.

Each user's most recent items (at most ``max_len``, oldest first) pass through learnable item
and position embeddings and ``blocks`` pre-norm transformer blocks with causal self-attention;
the hidden state at position t scores every item by a dot product with the (shared) item
embeddings, and the model learns to put item t+1 on top: softmax cross-entropy at every
position, over all items, or above ``sampled_above`` items over ``negatives`` items drawn by
popularity with the logQ correction (so a million items stays feasible).

Training rows pack several users' sequences one after another (attention never crosses from
one to the next), which keeps padding low. Everything is seeded: the same seed and data give
the same weights on CPU. With validation targets, every epoch is scored (NDCG@10 of the held-out
item against all unseen items) and training stops after ``patience`` epochs without a gain,
keeping the best epoch's weights; without them it runs ``epochs`` epochs (a refit uses the
number of epochs that validation chose).

JAX is imported only when a model is fitted or loaded; the API serves these models with the
numpy forward pass in :mod:`recommender.online.sequence` on the weights :meth:`export` writes.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recommender.data.reasons import unit
from recommender.modeling.matrix import Sequences
from recommender.modeling.models import Model, Validation
from recommender.progress import StepFn, silent

NEG = -1e9
"""Score of what may never be chosen: padding, masked attention, seen items."""


AFFINITY_BATCH = 4096
"""Users per forward pass of an audience."""


@dataclass(frozen=True)
class Packed:
    """Training rows: several users' sequences per row of ``max_len`` positions (0 = padding)."""

    tokens: np.ndarray  # item column + 1
    targets: np.ndarray  # the next item's column + 1 (0: no target)
    segments: np.ndarray  # which sequence of the row a position belongs to (1, 2, ...; 0: padding)
    positions: np.ndarray  # position within its sequence


def windows(items: np.ndarray, max_len: int) -> list[np.ndarray]:
    """Cut one user's sequence into windows of at most ``max_len + 1`` items, newest first, overlapping by one."""
    out, end = [], len(items)
    while end >= 2:
        start = max(0, end - max_len - 1)
        out.append(items[start:end])
        end = start + 1 if start > 0 else 0
    return out


def _bins(lengths: list[int], max_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Best-fit packing of pieces of ``lengths`` into rows of ``max_len``: (row, start) per piece, rows.

    Deterministic: longest first, ties in the given order.
    """
    free: list[list[int]] = [[] for _ in range(max_len + 1)]  # free[c]: rows with c positions left
    used: list[int] = []
    row_of, start_of = np.zeros(len(lengths), dtype=np.int64), np.zeros(len(lengths), dtype=np.int64)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        need = lengths[i]
        room = next((c for c in range(need, max_len + 1) if free[c]), None)
        if room is None:
            used.append(0)
            row, room = len(used) - 1, max_len
        else:
            row = free[room].pop()
        row_of[i], start_of[i] = row, used[row]
        used[row] += need
        free[room - need].append(row)
    return row_of, start_of, len(used)


def _rows(pieces: list[np.ndarray], lengths: list[int], max_len: int) -> tuple[Packed, np.ndarray, np.ndarray]:
    """``pieces`` packed into rows; a piece longer than its length has its last item as a target only."""
    row_of, start_of, n_rows = _bins(lengths, max_len)
    shape = (max(n_rows, 1), max_len)
    tokens, targets, segments, positions = (np.zeros(shape, dtype=np.int32) for _ in range(4))
    segment = np.zeros(shape[0], dtype=np.int32)
    for piece, length, row, at in zip(pieces, lengths, row_of, start_of, strict=True):
        segment[row] += 1
        tokens[row, at : at + length] = piece[:length] + 1
        targets[row, at : at + len(piece) - 1] = piece[1:] + 1
        segments[row, at : at + length] = segment[row]
        positions[row, at : at + length] = np.arange(length)
    return Packed(tokens, targets, segments, positions), row_of, start_of


def pack(seqs: Sequences, max_len: int) -> Packed:
    """Every user's windows packed into training rows (input: all but the last item; target: the next item)."""
    pieces = [w for u in range(len(seqs.indptr) - 1) for w in windows(seqs.of(u), max_len)]
    return _rows(pieces, [len(w) - 1 for w in pieces], max_len)[0]


def pack_last(seqs: Sequences, users: np.ndarray, max_len: int) -> tuple[Packed, np.ndarray]:
    """Each user's newest ``max_len`` items packed into rows; returns the rows and, per user, the flat index of
    its newest item's position (-1: no items)."""
    pieces = [seqs.of(int(u))[-max_len:] for u in users]
    lengths = [len(p) for p in pieces]
    packed, row_of, start_of = _rows(pieces, lengths, max_len)
    end = row_of * max_len + start_of + np.asarray(lengths, dtype=np.int64) - 1
    return packed, np.where(np.asarray(lengths) > 0, end, -1)


def _network(n_items: int, p: dict[str, Any]) -> Any:
    """The Flax module (built lazily: importing this file does not import JAX)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    hidden, heads = int(p["hidden"]), int(p["heads"])
    init = nn.initializers.xavier_normal()

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x: Any, mask: Any, train: bool) -> Any:
            drop = nn.Dropout(float(p["dropout"]), deterministic=not train)
            h = nn.LayerNorm(epsilon=1e-6, name="ln_att")(x)
            b, length, _ = h.shape
            q, k, v = (
                nn.Dense(hidden, name=n, kernel_init=init)(h).reshape(b, length, heads, hidden // heads)
                for n in ("q", "k", "v")
            )
            att = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(hidden // heads)
            att = jax.nn.softmax(jnp.where(mask[:, None], att, NEG), axis=-1)
            out = jnp.einsum("bhqk,bkhd->bqhd", drop(att), v).reshape(b, length, hidden)
            x = x + drop(nn.Dense(hidden, name="o", kernel_init=init)(out))
            h = nn.LayerNorm(epsilon=1e-6, name="ln_ffn")(x)
            h = nn.Dense(int(p["inner"]), name="ffn_in", kernel_init=init)(h)
            h = nn.Dense(hidden, name="ffn_out", kernel_init=init)(drop(jax.nn.gelu(h, approximate=True)))
            return x + drop(h)

    class SASRec(nn.Module):
        @nn.compact
        def __call__(self, tokens: Any, segments: Any, positions: Any, train: bool = False) -> Any:
            x = nn.Embed(n_items + 1, hidden, name="item_emb", embedding_init=init)(tokens)
            x = x + nn.Embed(int(p["max_len"]), hidden, name="pos_emb", embedding_init=init)(positions)
            x = nn.Dropout(float(p["dropout"]), deterministic=not train)(x)
            length = tokens.shape[1]
            causal = jnp.tril(jnp.ones((length, length), dtype=bool))
            mask = (segments[:, :, None] == segments[:, None, :]) & causal[None] & (segments[:, None, :] > 0)
            for i in range(int(p["blocks"])):
                x = Block(name=f"block_{i}")(x, mask, train)
            return nn.LayerNorm(epsilon=1e-6, name="ln_out")(x)

    return SASRec()


class SequentialModel(Model):
    """SASRec: next-item prediction from the order of each user's items."""

    family = "sequential"
    uses_order = True
    defaults: ClassVar[dict[str, Any]] = {
        "hidden": 64,
        "blocks": 2,
        "heads": 2,
        "inner": 256,
        "max_len": 50,
        "dropout": 0.3,
        "learning_rate": 2e-3,
        "weight_decay": 0.0,
        "batch_rows": 32,
        "epochs": 200,
        "patience": 5,
        "max_seconds": 0.0,
        "refit_epochs": 5,
        "sampled_above": 10_000,
        "negatives": 2048,
    }
    score_batch = 256
    _warm: Any = None
    """Weights to start from (a refit); None: a fresh initialization."""
    _run_epochs: int = 0
    """Epochs to run without validation (a refit); 0: ``epochs``."""

    def fit(
        self,
        user_items: sp.csr_matrix,
        show_progress: bool = False,
        *,
        sequences: Sequences | None = None,
        validation: Validation | None = None,
        report: StepFn = silent,
    ) -> None:
        """Train on ``sequences`` (required); early-stop on ``validation`` when given."""
        import jax
        import optax

        if sequences is None:
            raise ValueError("the sequential family needs the users' item sequences")
        p, rng = self.params, np.random.default_rng(self.seed)
        self.n_items = user_items.shape[1]
        packed = pack(sequences, int(p["max_len"]))
        net = _network(self.n_items, p)
        self._compile()
        key = jax.random.PRNGKey(self.seed)
        batch = int(p["batch_rows"])
        zeros = np.zeros((batch, int(p["max_len"])), dtype=np.int32)
        params = self._warm if self._warm is not None else net.init(key, zeros, zeros, zeros)["params"]
        optimizer = optax.adamw(float(p["learning_rate"]), weight_decay=float(p["weight_decay"]))
        state = optimizer.init(params)
        popularity = np.bincount(sequences.items, minlength=self.n_items).astype(np.float64) + 1.0
        train_step = _train_step(net, optimizer, self._sampled(), int(p["negatives"]), popularity / popularity.sum())
        self.history: list[dict[str, float]] = []
        best, best_params, waited = -1.0, params, 0
        started = time.monotonic()
        for epoch in range(1, (self._run_epochs or int(p["epochs"])) + 1):
            clock, losses = time.monotonic(), list[float]()
            order = rng.permutation(len(packed.tokens))
            for lo in range(0, len(order), batch):
                rows = _fixed(order[lo : lo + batch], batch)
                arrays = [_take(a, rows) for a in (packed.tokens, packed.targets, packed.segments, packed.positions)]
                params, state, loss = train_step(
                    params, state, jax.random.fold_in(key, len(losses) + epoch * 10**6), *arrays
                )
                losses.append(float(loss))
            self._params = params
            record = {
                "epoch": float(epoch),
                "loss": float(np.mean(losses)),
                "seconds": round(time.monotonic() - clock, 3),
            }
            if validation is not None:
                record |= _rank_metrics(self._ranks(validation.users, sequences, user_items, validation.targets))
            self.history.append(record)
            report(_describe(record))
            if validation is not None:
                if record["val_ndcg_at_10"] > best:
                    best, best_params, waited, self.best_epoch = record["val_ndcg_at_10"], params, 0, epoch
                else:
                    waited += 1
                if waited >= int(p["patience"]):
                    break
            if float(p["max_seconds"]) and time.monotonic() - started > float(p["max_seconds"]):
                report(f"stopped after epoch {epoch}: max_seconds ({p['max_seconds']:.0f} s) spent")
                break
        if validation is None:
            self.best_epoch = len(self.history)
        else:
            self._params = best_params

    def _sampled(self) -> bool:
        return self.n_items > int(self.params["sampled_above"])

    def sequence_part(self) -> tuple[Model, float] | None:
        """Itself, at full weight."""
        return self, 1.0

    def refitted(
        self, user_items: sp.csr_matrix, *, sequences: Sequences | None = None, report: StepFn = silent
    ) -> Model:
        """Training continued on more data for ``refit_epochs`` epochs, from the weights validation chose
        (0: from scratch, for as many epochs as validation chose)."""
        model = SequentialModel(seed=self.seed, **self.params)
        model.params["max_seconds"] = 0.0  # a search trial's time cap is not the refit's
        more = int(self.params["refit_epochs"])
        model._warm, model._run_epochs = (self._params if more else None), (more or self.best_epoch)
        model.fit(user_items, sequences=sequences, report=report)
        model.best_epoch = self.best_epoch
        return model

    def _compile(self) -> None:
        import jax

        net = _network(self.n_items, self.params)
        self._encode = jax.jit(lambda params, t, s, pos: net.apply({"params": params}, t, s, pos))

    def user_vectors(self, users: np.ndarray, sequences: Sequences) -> np.ndarray:
        """The hidden state after each user's newest item (float32, users x hidden; zeros without history)."""
        max_len, size, hidden = int(self.params["max_len"]), self.score_batch, int(self.params["hidden"])
        packed, end = pack_last(sequences, users, max_len)
        states = np.zeros((len(packed.tokens), max_len, hidden), dtype=np.float32)
        for lo in range(0, len(packed.tokens), size):
            rows = _fixed(np.arange(lo, min(lo + size, len(packed.tokens))), size)
            arrays = [_take(a, rows) for a in (packed.tokens, packed.segments, packed.positions)]
            states[lo : lo + size] = np.asarray(self._encode(self._params, *arrays))[rows >= 0]
        out = states.reshape(-1, hidden)[np.maximum(end, 0)]
        out[end < 0] = 0.0
        return out

    def item_vectors(self) -> np.ndarray:
        """The item embeddings (items x hidden), the output layer's weights."""
        return np.asarray(self._params["item_emb"]["embedding"])[1:]

    explanation = "cosine of the item embeddings: the past items nearest to the item"

    def item_space(self) -> np.ndarray | None:
        """The item embeddings, scaled to unit length (computed once per fitted model)."""
        return self._once("_space", self._params, lambda: unit(self.item_vectors()))

    def affinity(
        self, users: np.ndarray, user_items: sp.csr_matrix, cols: np.ndarray, *, sequences: Sequences | None = None
    ) -> np.ndarray | None:
        """The hidden state after each user's newest item against the items' mean embedding (in batches of
        :data:`AFFINITY_BATCH` users: the states of a batch are users x length x hidden)."""
        if sequences is None:
            raise ValueError("the sequential family needs the users' sequences")
        target = self.item_vectors()[cols].mean(axis=0)
        parts = [
            self.user_vectors(users[lo : lo + AFFINITY_BATCH], sequences) @ target
            for lo in range(0, len(users), AFFINITY_BATCH)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def _scores(self, users: np.ndarray, sequences: Sequences, user_items: sp.csr_matrix) -> np.ndarray:
        scores = self.user_vectors(users, sequences) @ self.item_vectors().T
        seen = user_items[users].nonzero()
        scores[seen] = NEG
        return scores

    def _ranks(
        self, users: np.ndarray, sequences: Sequences, user_items: sp.csr_matrix, targets: np.ndarray
    ) -> np.ndarray:
        ranks = np.empty(len(users), dtype=np.int64)
        for lo in range(0, len(users), 4096):
            scores = self._scores(users[lo : lo + 4096], sequences, user_items)
            mine = scores[np.arange(len(scores)), targets[lo : lo + 4096]]
            ranks[lo : lo + 4096] = (scores > mine[:, None]).sum(axis=1)
        return ranks

    def recommend(
        self, users: np.ndarray, user_items: sp.csr_matrix, n: int, *, sequences: Sequences | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` unseen items after each user's sequence (``sequences`` is required)."""
        if sequences is None:
            raise ValueError("the sequential family needs the users' item sequences")
        ids = np.full((len(users), n), -1, dtype=np.int64)
        out = np.zeros((len(users), n), dtype=np.float32)
        for lo in range(0, len(users), 4096):
            scores = self._scores(users[lo : lo + 4096], sequences, user_items)
            top = _top_n(scores, n)
            ids[lo : lo + len(top), : top.shape[1]] = top
            out[lo : lo + len(top), : top.shape[1]] = np.take_along_axis(scores, top, 1)
        unseen = out > NEG / 2
        return np.where(unseen, ids, -1), np.where(unseen, out, 0.0).astype(np.float32)

    def similar_items(self, items: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest items by the cosine of their embeddings."""
        units = self.item_space()
        assert units is not None
        scores = units[items] @ units.T
        scores[np.arange(len(items)), items] = NEG
        top = _top_n(scores, min(n, len(units) - 1))
        ids, out = _pad_to(top, np.take_along_axis(scores, top, 1), n)
        return ids, out

    def export(self) -> dict[str, np.ndarray]:
        """The weights as flat float32 arrays named ``block_0/q/kernel`` etc., plus ``config`` (JSON bytes)."""
        from flax.traverse_util import flatten_dict

        flat = {"/".join(k): np.asarray(v, dtype=np.float32) for k, v in flatten_dict(self._params).items()}
        config = {k: self.params[k] for k in ("hidden", "heads", "blocks", "max_len")}
        return flat | {"config": np.frombuffer(json.dumps(config).encode(), dtype=np.uint8)}

    def _save_state(self, folder: Path) -> None:
        np.savez(folder / "weights.npz", **self.export())  # type: ignore[arg-type]
        (folder / "training.json").write_text(
            json.dumps({"n_items": self.n_items, "best_epoch": self.best_epoch, "history": self.history})
        )

    def _load_state(self, folder: Path) -> None:
        from flax.traverse_util import unflatten_dict

        state = json.loads((folder / "training.json").read_text())
        self.n_items, self.best_epoch, self.history = state["n_items"], state["best_epoch"], state["history"]
        with np.load(folder / "weights.npz") as arrays:
            self._params = unflatten_dict({tuple(k.split("/")): arrays[k] for k in arrays.files if k != "config"})
        self._compile()


def export_bytes(model: Model, items: np.ndarray) -> bytes | None:
    """What the API's forward pass needs as one ``.npz`` blob: the weights of ``model``'s sequential part, its
    blend weight and the item ids (None when the model has no sequential part)."""
    part = model.sequence_part()
    if part is None:
        return None
    member, weight = part
    assert isinstance(member, SequentialModel)
    weights = member.export()
    config = json.loads(weights["config"].tobytes()) | {"weight": weight}
    weights["config"] = np.frombuffer(json.dumps(config).encode(), dtype=np.uint8)
    weights["items"] = np.frombuffer(json.dumps([str(i) for i in items]).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **weights)  # type: ignore[arg-type]
    return buffer.getvalue()


def _train_step(net: Any, optimizer: Any, sampled: bool, negatives: int, probability: np.ndarray) -> Any:
    """One jitted optimizer step on a batch of packed rows; returns (params, state, loss)."""
    import jax
    import jax.numpy as jnp
    import optax

    log_q = jnp.asarray(np.log(probability * negatives), dtype=jnp.float32)
    probability_j = jnp.asarray(probability, dtype=jnp.float32)

    def loss_of(params: Any, key: Any, tokens: Any, targets: Any, segments: Any, positions: Any) -> Any:
        drop_key, sample_key = jax.random.split(key)
        hidden = net.apply({"params": params}, tokens, segments, positions, train=True, rngs={"dropout": drop_key})
        table = params["item_emb"]["embedding"]
        weight = (targets > 0).astype(jnp.float32)
        if sampled:  # the target against popularity-drawn items, both corrected by log Q
            drawn = jax.random.choice(sample_key, len(probability), shape=(negatives,), p=probability_j)
            positive = jnp.sum(hidden * table[targets], axis=-1) - log_q[jnp.maximum(targets - 1, 0)]
            negative = hidden @ table[drawn + 1].T - log_q[drawn]
            negative = jnp.where((drawn + 1)[None, None, :] == targets[..., None], NEG, negative)
            logits = jnp.concatenate([positive[..., None], negative], axis=-1)
            losses = -jax.nn.log_softmax(logits, axis=-1)[..., 0]
        else:  # every item
            logits = (hidden @ table.T).at[..., 0].set(NEG)
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        return jnp.sum(losses * weight) / jnp.maximum(jnp.sum(weight), 1.0)

    @jax.jit
    def step(params: Any, state: Any, key: Any, *batch: Any) -> Any:
        loss, grads = jax.value_and_grad(loss_of)(params, key, *batch)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return step


def _fixed(rows: np.ndarray, size: int) -> np.ndarray:
    """Row indices padded to ``size`` with -1 (an empty row), so every batch has one shape (one compilation)."""
    return np.concatenate([rows, np.full(size - len(rows), -1, dtype=rows.dtype)])


def _take(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = array[np.maximum(rows, 0)]
    out[rows < 0] = 0
    return out


def _top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Column indices of the ``n`` largest scores per row, best first (ties by column)."""
    n = min(n, scores.shape[1])
    part = (
        np.argpartition(-scores, n - 1, axis=1)[:, :n]
        if n < scores.shape[1]
        else np.tile(np.arange(n), (len(scores), 1))
    )
    order = np.lexsort((part, -np.take_along_axis(scores, part, 1)), axis=1)
    return np.take_along_axis(part, order, 1)


def _pad_to(ids: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    out_ids = np.full((len(ids), n), -1, dtype=np.int64)
    out_scores = np.zeros((len(ids), n), dtype=np.float32)
    out_ids[:, : ids.shape[1]], out_scores[:, : ids.shape[1]] = ids, scores
    return out_ids, out_scores


def _rank_metrics(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    hit = ranks < k
    return {
        f"val_hr_at_{k}": float(hit.mean()) if len(ranks) else 0.0,
        f"val_ndcg_at_{k}": float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()) if len(ranks) else 0.0,
    }


def _describe(record: dict[str, float]) -> str:
    text = f"epoch {int(record['epoch'])}: loss {record['loss']:.4f}"
    if "val_ndcg_at_10" in record:
        text += f", val NDCG@10 {record['val_ndcg_at_10']:.4f} HR@10 {record['val_hr_at_10']:.4f}"
    return text + f" ({record['seconds']:.1f} s)"
