"""Model versions registered before the packages existed still load, serve and roll back.

Such a version's stored code file imports ``recommender.pyfunc``, a module path that is gone. The
pipeline reads every version's bundle as data, so the code file's imports do not matter to it.
"""

from __future__ import annotations

import importlib.util

import redis

from recommender.config import Settings
from recommender.modeling.training import TrainConfig
from recommender.online.keys import Keys
from recommender.registry.lifecycle import publish_model, rollback_and_republish, train_and_register
from recommender.registry.promotion import promote

OLD_CODE = '''"""MLflow "models from code" entry point (as logged before the move)."""

from mlflow.models import set_model

from recommender.pyfunc import RecommenderPyfunc

set_model(RecommenderPyfunc())
'''


def test_a_version_logged_with_the_old_module_path_is_promoted_served_and_rolled_back_to(
    shop_settings: Settings,
) -> None:
    assert importlib.util.find_spec("recommender.pyfunc") is None  # the flat module is gone
    old = train_and_register(shop_settings, TrainConfig(family="itemknn", params={"K": 30}))
    [code] = list((shop_settings.home_abs / "mlartifacts").rglob("pyfunc_model.py"))
    code.write_text(OLD_CODE)  # what a version registered before the move holds
    promote(shop_settings, "production", old.model_version)
    first = publish_model(shop_settings)
    assert first.model_version == old.model_version and first.users > 0

    new = train_and_register(shop_settings, TrainConfig(family="als", params={"factors": 8, "iterations": 2}))
    promote(shop_settings, "production", new.model_version, force=True, reason="the next release")
    publish_model(shop_settings)
    decision, back = rollback_and_republish(shop_settings, "bad release")

    r = redis.Redis.from_url(str(shop_settings.redis_url), decode_responses=True)
    assert decision.version == old.model_version and back.model_version == old.model_version
    assert r.hget(Keys().meta(str(r.get(Keys().active))), "model_version") == old.model_version
