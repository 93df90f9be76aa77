"""The main job, end to end on a synthetic shop: ``make demo`` / ``recsys demo``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recommender.config import Settings
from recommender.ingest import IngestSummary, ProgressFn, ingest_file
from recommender.synthetic import ShopSpec, generate, write_shop

DEMO_SHOP = ShopSpec(users=3_000, items=600, events=120_000, seed=42, days=60)


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced."""

    shop_dir: Path
    ingest: IngestSummary


def run_demo(settings: Settings, progress: ProgressFn, spec: ShopSpec = DEMO_SHOP) -> DemoResult:
    """Generate a shop under ``RECSYS_HOME/demo`` and ingest it with its catalog."""
    shop_dir = settings.home_abs / "demo" / "shop"
    events, catalog = write_shop(generate(spec), shop_dir)
    summary = ingest_file(events, settings, catalog=catalog, progress=progress)
    return DemoResult(shop_dir=shop_dir, ingest=summary)
