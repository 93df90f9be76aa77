"""The main job, end to end on a synthetic shop: ``make demo`` / ``recsys demo``.

generate -> ingest -> train (tracked, registered as candidate) -> staging -> gate ->
production -> publish to Redis -> read recommendations back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recommender.config import Settings
from recommender.ingest import IngestSummary, ingest_file
from recommender.keys import Keys
from recommender.lifecycle import TrainOutcome, publish_model, train_and_register
from recommender.lookup import Lookup, similar_items, user_recommendations
from recommender.privacy import pseudonymize
from recommender.progress import ProgressFn, StepFn
from recommender.promotion import Decision, promote
from recommender.publish import Published
from recommender.redis_conn import connect
from recommender.synthetic import ShopSpec, generate, write_shop
from recommender.training import TrainConfig

DEMO_SHOP = ShopSpec(users=3_000, items=600, events=120_000, seed=42, days=60)
DEMO_USERS = ("u1", "u2", "u3")
DEMO_ITEM = "i1"


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced."""

    shop_dir: Path
    ingest: IngestSummary
    trained: TrainOutcome
    staging: Decision
    production: Decision
    published: Published
    recommendations: dict[str, Lookup]
    similar: Lookup
    mlflow_ui: str


def run_demo(
    settings: Settings, progress: ProgressFn, step: StepFn, notify: StepFn, spec: ShopSpec = DEMO_SHOP
) -> DemoResult:
    """Run the whole path in ``RECSYS_HOME`` and read the result back from Redis."""
    shop_dir = settings.home_abs / "demo" / "shop"
    step("generating a synthetic shop")
    events, catalog = write_shop(generate(spec), shop_dir)
    step("ingesting it")
    summary = ingest_file(events, settings, catalog=catalog, progress=progress)
    trained = train_and_register(settings, TrainConfig(family="als", seed=settings.seed, k=settings.k), step)
    staging = promote(settings, "staging", trained.model_version)
    production = promote(settings, "production", trained.model_version)
    step("publishing the production model to Redis")
    published = publish_model(settings, progress=progress, notify=notify)
    secret = settings.hmac_secret.get_secret_value()
    with connect(settings, notify) as r:
        keys = Keys(settings.redis_prefix)
        recs = {u: user_recommendations(r, keys, pseudonymize(u, secret), 5) for u in DEMO_USERS}
        sim = similar_items(r, keys, DEMO_ITEM, 5)
    ui = f"{Path('.venv/bin/mlflow')} ui --backend-store-uri {settings.tracking_uri} --port 5000"
    return DemoResult(shop_dir, summary, trained, staging, production, published, recs, sim, ui)
