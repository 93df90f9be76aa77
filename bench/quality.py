"""Quality table for docs/quality.md: the automatic search, then every family's best configuration on test.

Selection uses the validation item only (exactly what ``recsys train --model auto`` runs, same
defaults and budget). Afterwards, for reporting, each family's best-by-validation configuration
is fitted on train + validation and scored once on the test item, next to popularity.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/quality.py ../shared/data/amazon-beauty-5core/Beauty.txt \
        --format amazon-5core
    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/quality.py \
        ../shared/data/yoochoose-clicks-sample/yoochoose-clicks-100k_train_full.txt
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from recommender.config import Settings
from recommender.data.ingest import ingest_file
from recommender.modeling.selection import Trial, search
from recommender.modeling.training import fit_and_score
from recommender.registry.lifecycle import load_dataset


def describe(trial: Trial) -> str:
    """The configuration in a table cell."""
    w = trial.weighting
    parts = [f"{k}={round(v, 3) if isinstance(v, float) else v}" for k, v in trial.params.items()]
    if w.recency_half_life:
        parts.append(f"recency={w.recency_half_life:.2f} events")
    if w.half_life_days:
        parts.append(f"decay={w.half_life_days:.0f} d")
    parts += ["bm25"] if w.bm25 else []
    parts += ["log"] if w.log_scale else []
    return ", ".join(parts) or "-"


def main() -> None:
    """Print the markdown rows."""
    parser = argparse.ArgumentParser()
    parser.add_argument("path", type=Path)
    parser.add_argument("--format", default="auto")
    parser.add_argument("--budget-seconds", type=float, default=None, help="default RECSYS_SEARCH_SECONDS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp))
        ingest_file(args.path, settings, args.format)
        data = load_dataset(settings)
        budget = settings.search_seconds if args.budget_seconds is None else args.budget_seconds
        selection = search(settings, data, budget_seconds=budget, max_trials=settings.search_trials, k=settings.k)
        split = data.split
        print(
            f"{data.rows:,} events, {len(split.users):,} evaluated users, {len(selection.trials)} trials "
            f"in {selection.seconds:.0f} s (budget {selection.budget_seconds:.0f} s)"
        )
        print(
            "| family | best configuration (by validation) | val HR@10 | val NDCG@10 | test HR@10 | test NDCG@10 "
            "| test coverage@10 | test popularity percentile@10 |"
        )
        print("|---|---|---|---|---|---|---|---|")
        winner = selection.best
        for family in ("popular", "als", "bpr", "itemknn"):
            tried = [t for t in selection.trials if t.family == family]
            if not tried:
                continue
            best = max(tried, key=lambda t: t.metrics["ndcg_at_10"])
            test = fit_and_score(
                data, split.train_val, split.test_items, family, best.params, 0, best.weighting, settings.k
            ).metrics
            mark = " **(selected)**" if family == winner.family and best.params == winner.params else ""
            print(
                f"| {family}{mark} | {describe(best)} | {best.metrics['hr_at_10']:.4f} | "
                f"{best.metrics['ndcg_at_10']:.4f} | {test['hr_at_10']:.4f} | {test['ndcg_at_10']:.4f} | "
                f"{test['coverage_at_10']:.3f} | {test['popularity_percentile_at_10']:.3f} |"
            )


if __name__ == "__main__":
    main()
