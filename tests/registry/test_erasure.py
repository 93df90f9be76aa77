"""Erasure is final: no path that writes users' lists brings a forgotten user back.

The served shop's production model (version 1) was trained before the deletion, so its bundle still
holds the user; each path below publishes from such a bundle. A user is forgotten either through the
API (queued in ``forget:pending``) or completely (the ``forget_user`` DAG ran: tombstoned, queue empty).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from recommender.config import Settings
from recommender.data.privacy import pseudonymize
from recommender.data.store import Store
from recommender.modeling.training import TrainConfig
from recommender.online.audiences import Stored, store_audience
from recommender.online.erasure import forget_in_redis, request_forget
from recommender.online.experiments import running_experiment, start_experiment
from recommender.online.keys import Keys
from recommender.ops.forget import forget_user
from recommender.ops.pipeline import flip_published, plan_publish, publish_part
from recommender.registry.lifecycle import publish_model, rollback_and_republish, train_and_register
from recommender.registry.promotion import promote
from recommender.registry.publish import Published, begin, finish, write_shard
from recommender.registry.tracking import load_bundle

KEYS = Keys("recsys")
RAW = "u1"


def holdings(r: redis.Redis, version: str, user: str) -> list[str]:
    """The keys of ``version`` that hold ``user``'s lists."""
    return [k for k in KEYS.personal(version, user) if r.exists(k)]


def by_api(settings: Settings, r: redis.Redis) -> None:
    request_forget(r, KEYS, pseudonymize(RAW, "test-secret"))


def by_dag(settings: Settings, r: redis.Redis) -> None:
    forget_user(settings, RAW)


def republish(settings: Settings) -> tuple[Published, str]:
    out = publish_model(settings)
    return out, out.version


def challenger(settings: Settings) -> tuple[Published, str]:
    out = publish_model(settings, challenger=True)
    return out, out.version


def sharded(settings: Settings) -> tuple[Published, str]:
    three = settings.model_copy(update={"publish_shards": 3})
    parts = plan_publish(three, "1")
    done = flip_published(three, [publish_part(three, p) for p in parts])
    return Published(**done), str(done["version"])  # type: ignore[arg-type]


def rollback_to_a_version_no_longer_kept(settings: Settings) -> tuple[Published, str]:
    newer = train_and_register(settings, TrainConfig(family="popular"))
    promote(settings, "production", newer.model_version, force=True, reason="test")
    publish_model(settings)
    publish_model(settings)  # version 1's copy is no longer kept (two kept, both of the newer model)
    _, out = rollback_and_republish(settings, "test")
    assert not out.reused and out.model_version == "1"
    return out, out.version


@pytest.mark.parametrize(
    ("forget", "publish"),
    [
        (by_dag, republish),
        (by_api, republish),
        (by_api, challenger),
        (by_dag, sharded),
        (by_dag, rollback_to_a_version_no_longer_kept),
    ],
    ids=["republish-after-dag", "republish-after-api", "challenger", "sharded", "rollback-not-kept"],
)
def test_no_publish_path_writes_a_forgotten_user_again(
    served_settings: Settings,
    forget: Callable[[Settings, redis.Redis], None],
    publish: Callable[[Settings], tuple[Published, str]],
) -> None:
    r = redis.Redis.from_url(str(served_settings.redis_url), decode_responses=True)
    user = pseudonymize(RAW, "test-secret")
    bundle, _ = load_bundle(served_settings, alias=None, model_version="1")
    assert user in set(bundle.vocab.users.tolist())  # the model still holds them
    forget(served_settings, r)
    out, version = publish(served_settings)
    assert holdings(r, version, user) == []
    assert list(r.scan_iter(match=f"*{user}*")) == []
    assert out.withheld == 1
    others = [str(u) for u in bundle.vocab.users[:5] if str(u) != user]
    assert all(r.exists(KEYS.user(version, u)) for u in others)  # everyone else is served as before


def test_a_flip_back_to_a_kept_copy_removes_a_user_tombstoned_since(served_settings: Settings) -> None:
    """The forget's Redis step never ran (a failure after the tombstone): the kept copy still holds the
    user, and flipping back to it removes them before it is served."""
    r = redis.Redis.from_url(str(served_settings.redis_url), decode_responses=True)
    user, kept = pseudonymize(RAW, "test-secret"), str(r.get(KEYS.active))
    Store(served_settings).add_tombstone(user)
    assert holdings(r, kept, user)
    out = publish_model(served_settings, reuse=True)
    assert out.reused and out.version == kept and out.withheld == 1
    assert holdings(r, kept, user) == []


def test_a_user_forgotten_while_a_publish_writes_is_removed_before_the_flip(served_settings: Settings) -> None:
    """The shard read the forgotten set before the deletion came (a stale set), and wrote the user; the
    deletion removed nothing yet to be written. The flip removes them."""
    r = redis.Redis.from_url(str(served_settings.redis_url), decode_responses=True)
    settings, user = served_settings, pseudonymize(RAW, "test-secret")
    bundle, _ = load_bundle(settings, alias=None, model_version="1")
    version = begin(r, settings, bundle, "1", Store(settings).read_items())
    Store(settings).add_tombstone(user)  # the forget_user DAG, midway through the publish
    forget_in_redis(r, KEYS, user)
    write_shard(r, KEYS, version, bundle, settings, erased=frozenset())
    assert KEYS.taste(version, user) in holdings(r, version, user)  # the content model's part of them too
    out = finish(r, settings, version)
    assert out.withheld == 1 and holdings(r, version, user) == []
    assert str(r.get(KEYS.active)) == version


def test_the_forget_report_names_the_versions_holding_the_user_and_the_retention_deletes_the_old_ones(
    served_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Versions 1, 2 (the rollback target), 3 (production) and 4 (a candidate) were trained before the deletion.
    The report names all four; the retention keeps them while young, then deletes 1 and 4 with their runs and
    files, takes 1 out of production's history, and a rollback still goes back to 2."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from recommender.ops.forget import purge_forgotten_models
    from recommender.registry import retention
    from recommender.registry.promotion import rollback
    from recommender.registry.retention import logged_model_id
    from recommender.registry.tracking import client

    settings = served_settings
    for promoted in (True, True, False):
        out = train_and_register(settings, TrainConfig(family="popular"))
        if promoted:
            promote(settings, "production", out.model_version, force=True, reason="test")
    report = forget_user(settings, RAW)
    assert report.model_versions == ["1", "2", "3", "4"]
    young = purge_forgotten_models(settings)  # the default retention: 30 days
    assert young.deleted == [] and set(young.kept) == {"1", "2", "3", "4"} and "under the retention" in young.kept["4"]
    with monkeypatch.context() as patched:  # remembered on the versions: the next pass reads no vocabulary
        patched.setattr(retention, "_users_of", lambda *_: pytest.fail("read a vocabulary again"))
        assert purge_forgotten_models(settings).kept == young.kept
    c = client(settings)
    gone = [c.get_model_version(settings.model_name, v) for v in ("1", "4")]
    bundles = [get_artifact_repository(c.get_logged_model(str(logged_model_id(v))).artifact_location) for v in gone]
    assert all(c.list_artifacts(v.run_id) for v in gone) and all(b.list_artifacts() for b in bundles)
    purged = purge_forgotten_models(settings.model_copy(update={"forget_model_retention_days": 0}))
    assert purged.deleted == ["1", "4"] and purged.kept == {"2": "the rollback target", "3": "production"}
    for version in gone:
        with pytest.raises(MlflowException):
            c.get_model_version(settings.model_name, version.version)
        assert c.get_run(version.run_id).info.lifecycle_stage == "deleted" and c.list_artifacts(version.run_id) == []
    assert all(b.list_artifacts() == [] for b in bundles)  # the bundles' files, which held the user, are gone too
    assert forget_user(settings, RAW).model_versions == ["2", "3"]
    assert rollback(settings, "test").version == "2"
    with pytest.raises(LookupError):  # version 1 left production's history with its files: nothing to go back to
        rollback(settings, "again")


def test_a_batch_of_forgotten_users_only_writes_nothing_and_the_rest_is_served(served_settings: Settings) -> None:
    """Every user of the first scoring batch forgotten (an empty MSET would have failed the whole publish)."""
    r = redis.Redis.from_url(str(served_settings.redis_url), decode_responses=True)
    settings = served_settings
    bundle, _ = load_bundle(settings, alias=None, model_version="1")
    first = {str(u) for u in bundle.vocab.users[: settings.publish_batch]}
    version = begin(r, settings, bundle, "1", Store(settings).read_items())
    written = write_shard(r, KEYS, version, bundle, settings, erased=frozenset(first))
    assert written["withheld"] == len(first) and written["users"] == len(bundle.vocab.users) - len(first)
    assert not any(r.exists(KEYS.user(version, u)) for u in first)
    assert r.exists(KEYS.user(version, str(bundle.vocab.users[-1])))


def test_forgetting_in_redis_leaves_the_pseudonym_nowhere(redis_settings: Settings) -> None:
    """Lists aside: their cursors and their place in a running experiment's exposed users go too."""
    r = redis.Redis.from_url(str(redis_settings.redis_url), decode_responses=True)
    user, other = "p" * 32, "q" * 32
    r.zadd(KEYS.cursors_of(user), {"tok1": 1.0})
    r.sadd(KEYS.cursor("tok1"), "i1")
    r.hset(KEYS.meta("m2-v"), "model_version", "2")
    r.lpush(KEYS.versions, "m2-v")
    start_experiment(r, KEYS, "m2-v")
    running = running_experiment(r, KEYS)
    assert running is not None
    r.sadd(KEYS.exposed(running.id, "2"), user, other)
    status = Stored(10, 2, "2", "als", 1, 0.0)
    r.sadd(KEYS.started, "m1-v")  # a version being replaced still holds its audiences
    for version, label in (("m2-v", "item:i1"), ("m2-v", "category:c01"), ("m1-v", "item:i1")):
        store_audience(r, KEYS, version, label, status, [user, other], [0.9, 0.5])
    forget_in_redis(r, KEYS, user)
    assert not r.exists(KEYS.cursors_of(user)) and not r.exists(KEYS.cursor("tok1"))
    assert r.smembers(KEYS.exposed(running.id, "2")) == {other}
    for version, label in (("m2-v", "item:i1"), ("m2-v", "category:c01"), ("m1-v", "item:i1")):
        assert r.zrange(KEYS.audience(version, label), 0, -1) == [other]
    readers = {"string": r.get, "hash": r.hgetall, "set": r.smembers, "zset": lambda k: r.zrange(k, 0, -1)}
    readers |= {"list": lambda k: r.lrange(k, 0, -1), "stream": r.xrange}
    for key in r.scan_iter(count=1000):  # nowhere: no key's name, no value
        assert user not in key and user not in repr(readers[r.type(key)](key)), key
