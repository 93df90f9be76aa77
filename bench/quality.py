"""Quality table for docs/quality.md: the automatic search, then every family's best configuration on test.

Selection uses the validation item only (exactly what ``recsys train --model auto`` runs, same
defaults and budget). Afterwards, for reporting, each family's best-by-validation configuration
is fitted on train + validation and scored once on the test item, next to popularity.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/quality.py ../shared/data/amazon-beauty-5core/Beauty.txt \
        --format amazon-5core
    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/quality.py \
        ../shared/data/yoochoose-clicks-sample/yoochoose-clicks-100k_train_full.txt

With ``--diversity`` it skips the search and measures what the serve-time diversity settings do
to one configuration on the test item: HR@10 and NDCG@10, intra-list diversity (1 - the mean
item-item cosine of the list's items over the training matrix, and the share of pairs from two
categories), and catalogue coverage, for no diversity, a cap of 2 per category, MMR and both.
With no path it runs on a synthetic shop (which has categories). With ``--cold-items`` it runs the
new-items protocol of docs/quality.md (a content model for items nobody has bought yet) instead:

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/quality.py ../shared/data/amazon-beauty-5core/Beauty.txt \
        --format amazon-5core --cold-items --attributes ../shared/data/amazon-beauty-5core/Beauty_item2attributes.json

With ``--explore 0,0.1,0.2`` as well it measures exploration on that split: overall HR@10 and NDCG@10 with
each share of the slots given to new items, and the new items' share of the hits and of the slots.

With ``--audience`` it measures audiences (``recsys audience``): for each item that is the last item of five or
more users, how many of those later buyers its top-100 audience holds, per family, against lookalikes of its
past buyers and random users.

With ``--objective`` it measures revenue-aware ranking on the synthetic shop (no shared real data set carries
prices): HR@10 and revenue@10 at each sensitivity of a placement whose objective is revenue.

The search table otherwise:

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/quality.py --diversity
    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/quality.py ../shared/data/amazon-beauty-5core/Beauty.txt \
        --format amazon-5core --diversity
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from datetime import UTC, datetime

import numpy as np
import scipy.sparse as sp

from recommender.config import Settings
from recommender.data.ingest import ingest_file
from recommender.data.synthetic import ShopSpec, generate, write_shop
from recommender.modeling.families import make_model
from recommender.modeling.matrix import Weighting, confidence, sequences
from recommender.modeling.selection import Trial, search
from recommender.modeling.together import baskets, evaluate_together
from recommender.modeling.training import Dataset, default_weighting, score_test, train
from recommender.online.rules import RuleSet, arrange
from recommender.registry.lifecycle import load_dataset

VARIANTS = {
    "none": {},
    "max 2 per category": {"max_per_category": 2},
    "MMR, lambda 0.7": {"mmr_lambda": 0.7},
    "max 2 per category + MMR 0.7": {"max_per_category": 2, "mmr_lambda": 0.7},
}
POOL = 200  # candidates per user, as published


def diversity_table(data: Dataset, family: str, weighting: Weighting, sample: int, n: int = 10) -> None:
    """Print the diversity rows for ``family`` (default parameters) on ``sample`` evaluated users."""
    together = evaluate_together(baskets(data.inter), n)
    print(
        f"frequently bought together, each user's last of 2+ baskets held out ({together['together_baskets']:.0f}): "
        f"HR@{n} {together['together_hr']:.4f} against popularity's {together['together_popular_hr']:.4f}"
    )
    split = data.split
    matrix = confidence(data.inter, split.train_val, weighting)
    model = make_model(family, {}, 0)
    model.fit(matrix)
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(len(split.users), min(sample, len(split.users)), replace=False))
    users, targets = split.users[chosen], split.test_items[chosen]
    ids, scores = model.recommend(users, matrix, POOL)
    n_items = matrix.shape[1]
    similar_ids, similar_scores = model.similar_items(np.arange(n_items), 50)
    similar = {}  # what the API reads: each item's published similar list
    for item in range(n_items):
        valid = similar_ids[item] >= 0
        similar[str(item)] = ([str(o) for o in similar_ids[item][valid]], similar_scores[item][valid].tolist())

    cats = data.categories if data.categories is not None else np.full(n_items, "")
    attrs = {str(i): {"category": cats[i]} if cats[i] else {} for i in range(n_items)}
    binary = (matrix > 0).astype(np.float32).tocsc()
    norms = np.sqrt(np.asarray(binary.multiply(binary).sum(axis=0)).ravel()) + 1e-9
    vectors = sp.csr_matrix(binary.T.multiply(1 / norms[:, None]))
    print(f"{family} (default parameters), {len(users):,} sampled test users, {POOL} candidates each, top {n}")
    print("| diversity | test HR@10 | test NDCG@10 | ILD@10 (cosine) | category pairs differing | coverage@10 |")
    print("|---|---|---|---|---|---|")
    now = datetime.now(UTC)
    for name, setting in VARIANTS.items():
        if "max_per_category" in setting and not any(cats):
            continue
        rules = RuleSet.model_validate({"diversity": setting})
        hits = ndcg = ild = differ = 0.0
        shown: set[int] = set()
        for row in range(len(users)):
            valid = ids[row] >= 0
            pool = [(str(i), float(s)) for i, s in zip(ids[row][valid], scores[row][valid], strict=True)]
            top = [int(i) for i, _ in arrange(pool, attrs, rules, n, now, similar=similar)]
            shown.update(top)
            if int(targets[row]) in top:
                hits += 1
                ndcg += 1 / np.log2(top.index(int(targets[row])) + 2)
            block = (vectors[top] @ vectors[top].T).toarray()
            pairs = len(top) * (len(top) - 1)
            ild += (pairs - (block.sum() - np.trace(block))) / pairs if pairs else 0.0
            labels = [cats[i] for i in top]
            differ += sum(a != b for a in labels for b in labels) / pairs if pairs else 0.0
        count = len(users)
        print(
            f"| {name} | {hits / count:.4f} | {ndcg / count:.4f} | {ild / count:.3f} | "
            f"{differ / count if any(cats) else float('nan'):.3f} | {len(shown) / n_items:.3f} |"
        )


def progress(message: str) -> None:
    """What the search and the training are doing, on stderr (the table goes to stdout)."""
    print(message, file=sys.stderr, flush=True)


def peak_gb() -> float:
    """This process's peak resident memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def describe(trial: Trial) -> str:
    """The configuration in a table cell."""
    if trial.family == "blend":
        (a, b), w = trial.params["members"], float(trial.params["weight"])
        return f"{trial.params['fusion']} fusion: {w:.1f} {a['family']} + {1 - w:.1f} {b['family']}"
    w = trial.weighting
    shown = ("hidden", "blocks", "dropout", "learning_rate", "max_len")
    params = {k: v for k, v in trial.params.items() if trial.family != "sequential" or k in shown}
    parts = [f"{k}={round(v, 4) if isinstance(v, float) else v}" for k, v in params.items()]
    if w.recency_half_life:
        parts.append(f"recency={w.recency_half_life:.2f} events")
    if w.half_life_days:
        parts.append(f"decay={w.half_life_days:.0f} d")
    parts += ["bm25"] if w.bm25 else []
    parts += ["log"] if w.log_scale else []
    return ", ".join(parts) or "-"


def cold_data(settings: Settings) -> tuple[list[dict[str, object]], list[list[int]]]:
    """The catalog's rows (numeric ids in numeric order) and each user's items as row indices, in time order."""
    from recommender.data.catalog import details_of
    from recommender.data.store import Store

    rows = [{"item_id": r["item_id"], **details_of(r)} for r in Store(settings).read_items().to_pylist()]
    rows.sort(key=lambda r: (len(r["item_id"]), r["item_id"]))  # numeric ids in numeric order: the reference split
    index = {r["item_id"]: k for k, r in enumerate(rows)}
    inter = load_dataset(settings).inter
    for item in inter.vocab.items:  # an item with events and no catalog row still has a (featureless) place
        if str(item) not in index:
            index[str(item)] = len(rows)
            rows.append({"item_id": str(item)})
    row_of = np.array([index[str(i)] for i in inter.vocab.items], dtype=np.int64)  # vocabulary column -> row
    ordered = sequences(inter, np.ones(len(inter.user), dtype=bool))
    return rows, [row_of[ordered.of(u)].tolist() for u in range(inter.shape[0])]


def cold_items_table(settings: Settings, seed: int = 0, tower_seed: int = 0) -> None:
    """The new-items protocol (docs/quality.md) on what ``settings`` holds: events and a catalog with attributes."""
    from recommender.modeling.content import COLD_RANKINGS, TowerConfig, cold_figures

    rows, per_user = cold_data(settings)
    clock = time.monotonic()
    figures = cold_figures(rows, per_user, seed=seed, config=TowerConfig(seed=tower_seed))
    print(
        f"{figures['cold_items']:,.0f} new items (seed {seed}), {figures['cold_users']:,.0f} users whose last item "
        f"is new; the tower (seed {tower_seed}) trained and all scored in {time.monotonic() - clock:.0f} s, "
        f"peak memory {peak_gb():.1f} GB"
    )
    base = figures["cold_profile_hr_at_10"], figures["cold_profile_ndcg_at_10"]
    print("| ranking of the new items | HR@10 | NDCG@10 | vs the plain profile |")
    print("|---|---|---|---|")
    for name in COLD_RANKINGS:
        hr, ndcg = figures[f"cold_{name}_hr_at_10"], figures[f"cold_{name}_ndcg_at_10"]
        print(f"| {name} | {hr:.4f} | {ndcg:.4f} | {hr / base[0]:.2f}x / {ndcg / base[1]:.2f}x |")


def exploration_table(settings: Settings, shares: list[float], seed: int = 0, tower_seed: int = 0, k: int = 10) -> None:
    """Exploration offline, on the new-items split: every user's last item is the test item, and the lists are
    item-KNN's top ``k`` over the warm training data with each share of the slots given to new items as the API
    does (:mod:`recommender.online.explore`), the users replayed in a seeded random order: a shown new item counts
    an impression, the user's test item a click, and later users' draws read those counts."""
    from recommender.modeling.content import ContentTower, TowerConfig, cold_split, features
    from recommender.online.explore import CANDIDATES, drawn, placed, slots

    rows, per_user = cold_data(settings)
    users = [s for s in per_user if len(s) > 1]
    split = cold_split(users, len(rows), seed=seed)
    cfg = TowerConfig(seed=tower_seed)
    fitted = features(rows, cfg.max_tokens)
    tower = ContentTower.fit(
        fitted.padded, len(fitted.weights.vocabulary), [t for t in split.train if len(t) > 1], split.warm, cfg
    )
    train = sp.csr_matrix(
        (
            np.ones(sum(len(t) for t in split.train), dtype=np.float32),
            (np.repeat(np.arange(len(users)), [len(t) for t in split.train]), np.concatenate(split.train)),
        ),
        shape=(len(users), len(rows)),
    )
    train.sum_duplicates()
    train.data[:] = 1.0
    knn = make_model("itemknn")
    knn.fit(train)
    top, _ = knn.recommend(np.arange(len(users)), train, k)
    vectors, bias = tower.item_vectors(split.new)
    is_new = np.zeros(len(rows), dtype=bool)
    is_new[split.new] = True
    candidates = []
    for history in split.train:  # each user's best new items by the content tower (the explore candidates)
        scores = np.asarray(vectors @ tower.user_vector(history) + bias)
        best = np.argsort(-scores, kind="stable")[:CANDIDATES]
        candidates.append(([str(i) for i in split.new[best]], scores[best].tolist()))
    targets = np.array([s[-1] for s in users])
    print(
        f"{len(users):,} users (their last item: {int(is_new[targets].sum()):,} of them new), "
        f"{len(split.new):,} new items (seed {seed}), item-KNN lists of {k}, peak memory {peak_gb():.1f} GB"
    )
    print(f"| share of the slots explored | HR@{k} | NDCG@{k} | new items' share of hits | of exposure |")
    print("|---|---|---|---|---|")
    for share in shares:
        rng = np.random.default_rng(seed)
        counts: dict[str, tuple[int, int]] = {}
        hits, gains, new_hits, explored = 0, 0.0, 0, 0
        at = slots(k, share)
        for u in rng.permutation(len(users)):
            picks = drawn(*candidates[u], counts, rng)[: len(at)] if at else []
            shown = placed([str(i) for i in top[u] if i >= 0], picks, at, lambda _: False)[:k]
            target = str(targets[u])
            for item in picks:
                seen, clicked = counts.get(item, (0, 0))
                counts[item] = (seen + 1, clicked + (item == target))
            explored += len(picks)
            if target in shown:
                hits += 1
                gains += 1.0 / np.log2(shown.index(target) + 2)
                new_hits += bool(is_new[int(target)])
        print(
            f"| {share:.0%} | {hits / len(users):.4f} | {gains / len(users):.4f} | "
            f"{new_hits / max(hits, 1):.3f} | {explored / (k * len(users)):.3f} |"
        )


def audience_table(data: Dataset, weighting: Weighting, families: list[str], k: int = 100, min_buyers: int = 5) -> None:
    """Audiences offline: the model trained on everything but each user's last item; for every item that is the
    last item of at least ``min_buyers`` users, its top-``k`` audience (users who had it before left out, as
    ``recsys audience`` does) and the share of those later buyers in it, against the lookalikes of the item's
    past buyers (each user's summed cosine to them over the training matrix) and random users."""
    split = data.split
    matrix = confidence(data.inter, split.train_val, weighting)
    later: dict[int, list[int]] = {}
    for user, item in zip(split.users, split.test_items, strict=True):
        later.setdefault(int(item), []).append(int(user))
    targets = sorted(i for i, buyers in later.items() if len(buyers) >= min_buyers)
    binary = (matrix > 0).astype(np.float32)
    rows = sp.csr_matrix(binary.multiply(1 / np.sqrt(np.maximum(binary.sum(axis=1), 1))))  # unit rows: cosine
    had = binary.tocsc()
    rng = np.random.default_rng(0)
    buyers = sum(len(later[i]) for i in targets)
    print(
        f"{len(targets):,} items that are the last item of {min_buyers}+ users ({buyers:,} later buyers), "
        f"{matrix.shape[0]:,} users, audiences of {k}"
    )
    print(f"| audience of {k} | later buyers in it (recall@{k}) | vs random |")
    print("|---|---|---|")

    def recall(score: Callable[[int], np.ndarray]) -> float:
        found = []
        for item in targets:
            scores = np.asarray(score(item), dtype=np.float64).copy()
            scores[had[:, item].indices] = -np.inf  # who had it already is not its audience
            top = np.argpartition(-scores, k)[:k]
            found.append(len(set(top.tolist()) & set(later[item])) / len(later[item]))
        return float(np.mean(found))

    def random_users(item: int) -> np.ndarray:
        return rng.random(matrix.shape[0])

    def lookalikes(item: int) -> np.ndarray:
        return np.asarray(rows @ np.asarray(rows[had[:, item].indices].sum(axis=0)).ravel()).ravel()

    base = recall(random_users)
    print(f"| random users | {base:.4f} | 1.00x |")
    value = recall(lookalikes)
    print(f"| lookalikes of its past buyers (summed cosine) | {value:.4f} | {value / base:.2f}x |")
    users = np.arange(matrix.shape[0])
    for family in families:
        model = make_model(family, {}, 0)
        model.fit(matrix)
        value = recall(lambda item, m=model: m.affinity(users, matrix, np.array([item])))
        print(f"| {family} (default parameters) | {value:.4f} | {value / base:.2f}x |")


def objective_table(data: Dataset, weighting: Weighting, family: str = "als", k: int = 10) -> None:
    """Revenue-aware ranking offline: the calibration measured on the validation item (fitted on train), then
    each test user's top 50 (fitted on train + validation) re-ordered at each sensitivity as a revenue placement
    does (:func:`recommender.online.revenue.by_value`); HR@k and revenue@k (the test item's price when it is in
    the top k, per user)."""
    from recommender.modeling.calibration import DEPTH, rank_calibration
    from recommender.modeling.evaluation import target_ranks
    from recommender.online.revenue import EXPONENTS, by_value

    split = data.split
    train_matrix = confidence(data.inter, split.train, weighting)
    model = make_model(family, {}, 0)
    model.fit(train_matrix)
    calibration = rank_calibration(target_ranks(model.recommend(split.users, train_matrix, DEPTH)[0], split.val_items))
    matrix = confidence(data.inter, split.train_val, weighting)
    model = make_model(family, {}, 0)
    model.fit(matrix)
    ids, scores = model.recommend(split.users, matrix, DEPTH)
    price = {c: float(row.get("price") or 0.0) for c, row in enumerate(data.items[: matrix.shape[1]])}
    print(
        f"{family} (default parameters), {len(split.users):,} test users, top {DEPTH} re-ordered, "
        f"p(rank 1) = {calibration[0]:.4f}"
    )
    print(f"| sensitivity | HR@{k} | revenue@{k} per user | vs relevance |")
    print("|---|---|---|---|")
    base = None
    for name, exponent in EXPONENTS.items():
        hits = revenue = 0.0
        for row, target in enumerate(split.test_items):
            ordered, _ = by_value(ids[row].tolist(), scores[row].tolist(), calibration, price, exponent)
            if int(target) in ordered[:k]:
                hits += 1
                revenue += price[int(target)]
        hr, per_user = hits / len(split.users), revenue / len(split.users)
        base = base or (hr, per_user)
        print(f"| {name} | {hr:.4f} | {per_user:.3f} | HR {hr / base[0]:.2f}x, revenue {per_user / base[1]:.2f}x |")


def attributes_catalog(path: Path, folder: Path) -> Path:
    """An item -> attribute ids JSON (Beauty_item2attributes.json) as a catalog CSV: one ``tags`` column."""
    mapping = json.loads(path.read_text())
    out = folder / "catalog.csv"
    with out.open("w") as f:
        f.write("item_id,tags\n")
        for item, tags in mapping.items():
            f.write(f"{item},{' '.join(str(t) for t in tags)}\n")
    return out


def main() -> None:
    """Print the markdown rows."""
    parser = argparse.ArgumentParser()
    parser.add_argument("path", type=Path, nargs="?", help="events file (default: a synthetic shop)")
    parser.add_argument("--format", default="auto")
    parser.add_argument("--budget-seconds", type=float, default=None, help="default RECSYS_SEARCH_SECONDS")
    parser.add_argument("--diversity", action="store_true", help="the diversity table instead of the search")
    parser.add_argument("--audience", action="store_true", help="the audiences table instead of the search")
    parser.add_argument("--objective", action="store_true", help="revenue-aware ranking instead of the search")
    parser.add_argument("--family", default="itemknn", help="with --diversity: the family measured")
    parser.add_argument("--users", type=int, default=3000, help="with --diversity: evaluated users sampled")
    parser.add_argument("--cold-items", action="store_true", help="the new-items protocol instead of the search")
    parser.add_argument("--attributes", type=Path, help="with --cold-items: item -> attribute ids JSON, as catalog")
    parser.add_argument("--tower-seed", type=int, default=0, help="with --cold-items: the content tower's seed")
    parser.add_argument(
        "--explore",
        type=lambda text: [float(v) for v in text.split(",")],
        help="with --cold-items: the exploration table at these shares of the slots (e.g. 0,0.1,0.2) instead",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp))
        if args.path is None:
            events, catalog = write_shop(
                generate(ShopSpec(users=20_000, items=3_000, events=600_000, seed=5)), Path(tmp)
            )
            ingest_file(events, settings, catalog=catalog)
        else:
            catalog = attributes_catalog(args.attributes, Path(tmp)) if args.attributes else None
            ingest_file(args.path, settings, args.format, catalog=catalog)
        if args.cold_items and args.explore:
            exploration_table(settings, args.explore, tower_seed=args.tower_seed)
            return
        if args.cold_items:
            cold_items_table(settings, tower_seed=args.tower_seed)
            return
        data = load_dataset(settings)
        if args.objective:
            objective_table(data, default_weighting(settings))
            return
        if args.audience:
            audience_table(data, default_weighting(settings), ["als", "bpr", "itemknn"])
            return
        if args.diversity:
            diversity_table(data, args.family, default_weighting(settings), args.users)
            return
        budget = settings.search_seconds if args.budget_seconds is None else args.budget_seconds
        clock = time.monotonic()
        selection = search(
            settings, data, budget_seconds=budget, max_trials=settings.search_trials, k=settings.k, step=progress
        )
        trained = train(settings, selection.best, data, progress, fitted=selection.fitted)  # what the CLI runs next
        auto_seconds = time.monotonic() - clock
        split = data.split
        print(
            f"{data.rows:,} events, {len(split.users):,} evaluated users, {len(selection.trials)} trials "
            f"in {selection.seconds:.0f} s (budget {selection.budget_seconds:.0f} s); search + winner's "
            f"training {auto_seconds / 60:.1f} min, peak memory {peak_gb():.1f} GB"
        )
        print(
            "| family | best configuration (by validation) | val HR@10 | val NDCG@10 | test HR@10 | test NDCG@10 "
            "| test coverage@10 | test popularity percentile@10 |"
        )
        print("|---|---|---|---|---|---|---|---|")
        winner = selection.best
        for family in ("popular", "als", "bpr", "itemknn", "sequential", "blend"):
            tried = [t for t in selection.trials if t.family == family]
            if not tried:
                continue
            best = max(tried, key=lambda t: t.metrics["ndcg_at_10"])
            if best.number in selection.fits:  # kept by the search (a sequential refit continues from it)
                chosen = selection.fits[best.number][0]
            else:
                chosen = make_model(family, best.params, 0)
            selected = family == winner.family and best.params == winner.params
            test = (trained.test if selected else score_test(data, chosen, best.weighting, settings.k)).metrics
            mark = " **(selected)**" if selected else ""
            print(
                f"| {family}{mark} | {describe(best)} | {best.metrics['hr_at_10']:.4f} | "
                f"{best.metrics['ndcg_at_10']:.4f} | {test['hr_at_10']:.4f} | {test['ndcg_at_10']:.4f} | "
                f"{test['coverage_at_10']:.3f} | {test['popularity_percentile_at_10']:.3f} |"
            )


if __name__ == "__main__":
    main()
