"""The pipeline reads a registered model as data: code planted in the artifact store never runs."""

from __future__ import annotations

from pathlib import Path

import mlflow

from recommender.config import Settings
from recommender.modeling.training import TrainConfig
from recommender.registry.lifecycle import publish_model, train_and_register
from recommender.registry.promotion import promote
from recommender.registry.tracking import load_bundle


def test_a_tampered_model_file_in_the_artifact_store_is_never_executed(shop_settings: Settings, tmp_path: Path) -> None:
    out = train_and_register(shop_settings, TrainConfig(family="als", params={"factors": 8, "iterations": 2}))
    promote(shop_settings, "production", out.model_version)
    [code] = list((shop_settings.home_abs / "mlartifacts").rglob("pyfunc_model.py"))
    marker = tmp_path / "ran"
    code.write_text(f"open({str(marker)!r}, 'w').write('pwned')\n" + code.read_text())  # an attacker with store access

    bundle, version = load_bundle(shop_settings)
    published = publish_model(shop_settings)  # what the retrain and promote DAGs run

    assert version == out.model_version and published.users == len(bundle.vocab.users) > 0
    assert not marker.exists()
    mlflow.pyfunc.load_model(f"models:/{shop_settings.model_name}/{version}")
    assert marker.read_text() == "pwned"  # the trust boundary (docs/security.md): pyfunc loading runs the store's code
