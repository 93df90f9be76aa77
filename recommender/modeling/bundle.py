"""A trained model with everything needed to use it: vocabulary, weighting, history.

The bundle is the unit that MLflow stores (as the artifact of the pyfunc model) and
that publishing loads: recommendations need the user's history (to filter seen items)
and the id vocabularies (to speak in external ids).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recommender.modeling.content import ContentModel
from recommender.modeling.families import load_model
from recommender.modeling.matrix import Sequences, Vocabulary, Weighting
from recommender.modeling.models import Model


@dataclass
class Bundle:
    """Model + vocabulary + weighting + the user x item matrix it was last fitted on."""

    model: Model
    vocab: Vocabulary
    weighting: Weighting
    user_items: sp.csr_matrix
    info: dict[str, Any] = field(default_factory=dict)
    together: tuple[np.ndarray, np.ndarray] | None = None
    """Per item column: the top items bought together with it (ids, scores); None in older bundles."""
    bought: sp.csr_matrix | None = None
    """User x item: the last purchase time (unix seconds); None in older bundles."""
    sequences: Sequences | None = None
    """Each user's items in time order, for models that read the order (None for the others)."""
    content: ContentModel | None = None
    """The content model for new items (None: the catalog has no content, or it was turned off)."""

    def save(self, folder: Path) -> Path:
        """Write the bundle into ``folder`` and return it."""
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(folder / "model")
        self.vocab.save(folder)
        sp.save_npz(folder / "user_items.npz", self.user_items, compressed=False)
        (folder / "weighting.json").write_text(json.dumps(asdict(self.weighting)))
        (folder / "bundle.json").write_text(json.dumps(self.info, default=str))
        if self.together is not None:
            np.savez(folder / "together.npz", ids=self.together[0], scores=self.together[1])
        if self.bought is not None:
            sp.save_npz(folder / "bought.npz", self.bought, compressed=False)
        if self.sequences is not None:
            self.sequences.save(folder / "sequences.npz")
        if self.content is not None:
            self.content.save(folder / "content")
        return folder

    @classmethod
    def load(cls, folder: Path) -> Bundle:
        """Read a bundle written by :meth:`save`."""
        together = None
        if (folder / "together.npz").exists():
            with np.load(folder / "together.npz") as arrays:
                together = (arrays["ids"], arrays["scores"])
        bought, seqs = folder / "bought.npz", folder / "sequences.npz"
        return cls(
            model=load_model(folder / "model"),
            vocab=Vocabulary.load(folder),
            weighting=Weighting(**json.loads((folder / "weighting.json").read_text())),
            user_items=sp.csr_matrix(sp.load_npz(folder / "user_items.npz")),
            info=json.loads((folder / "bundle.json").read_text()),
            together=together,
            bought=sp.csr_matrix(sp.load_npz(bought)) if bought.exists() else None,
            sequences=Sequences.load(seqs) if seqs.exists() else None,
            content=ContentModel.load(folder / "content") if (folder / "content").exists() else None,
        )

    def recommend(self, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The model's top ``n`` for user rows, after their whole history."""
        return self.model.recommend(rows, self.user_items, n, sequences=self.sequences)

    def because(self, rows: np.ndarray, ids: np.ndarray) -> np.ndarray | None:
        """The past item column behind each recommended column of ``ids`` (-1: none; None: the family has none)."""
        return self.model.because(rows, self.user_items, ids)

    def popularity(self) -> np.ndarray:
        """Distinct users per item column."""
        return np.asarray((self.user_items > 0).sum(axis=0)).ravel()

    def recommend_ids(self, user_ids: list[str], n: int) -> list[tuple[list[str], list[float], bool]]:
        """Recommendations per external (pseudonymized) user id: (items, scores, known user)."""
        rows = self.vocab.user_rows(user_ids)
        known = rows >= 0
        out: list[tuple[list[str], list[float], bool]] = []
        ids, scores = self.recommend(rows[known], n) if known.any() else (None, None)
        popularity = self.popularity()
        pop = np.argsort(-popularity, kind="stable")[:n]
        fallback = ([str(self.vocab.items[i]) for i in pop], popularity[pop].astype(float).tolist(), False)
        k = 0
        for is_known in known:
            if not is_known:
                out.append(fallback)
                continue
            assert ids is not None and scores is not None
            valid = ids[k] >= 0
            out.append(([str(self.vocab.items[i]) for i in ids[k][valid]], scores[k][valid].tolist(), True))
            k += 1
        return out
