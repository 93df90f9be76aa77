"""Champion/challenger: a deterministic split, signed recommendation ids, and a per-user report over the
experiment's own window that finds a planted difference, ignores forged ids and history before the start."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr
from scipy.stats import binomtest

from recommender.config import Settings
from recommender.data.privacy import pseudonymize
from recommender.modeling.training import TrainConfig
from recommender.online.experiments import RecommendationIds, in_challenger
from recommender.online.keys import Keys
from recommender.ops.experiment_report import experiment_report, rate, revenue_lift
from recommender.ops.pipeline import drain_events, experiment, stop_experiment
from recommender.registry.lifecycle import publish_model, train_and_register
from recommender.registry.promotion import promote
from serving.app import create_app

IDS = RecommendationIds("test-secret")
START = datetime(2025, 6, 1, tzinfo=UTC)


def test_the_split_is_deterministic_and_respects_the_share() -> None:
    users = [pseudonymize(f"user-{i}", "secret") for i in range(20_000)]
    first = [in_challenger(u, 0.1) for u in users]
    assert first == [in_challenger(u, 0.1) for u in users]  # the same users every time
    assert abs(sum(first) / len(users) - 0.1) < 0.01
    assert not any(in_challenger(u, 0.0) for u in users) and all(in_challenger(u, 1.0) for u in users)


def test_recommendation_ids_are_signed_and_tampering_is_caught() -> None:
    issued = IDS.issue("7", "home")
    assert IDS.verify(issued) is not None and IDS.verify(issued).model_version == "7"  # type: ignore[union-attr]
    version, placement, nonce, signature = issued.split("-")
    assert version == "7"
    assert placement == "home" and len(nonce) == 24 and len(signature) == 16
    assert IDS.verify(f"8-{placement}-{nonce}-{signature}") is None  # claims another variant
    assert IDS.verify(issued[:-1] + ("0" if issued[-1] != "0" else "1")) is None
    assert RecommendationIds("other-secret").verify(issued) is None
    assert IDS.verify("7-deadbeef") is None and IDS.verify(None) is None


def clicks(  # type: ignore[type-arg]
    users: range, version: str, converted: int, *, at: datetime = START, event: str = "view", placement: str = "home"
) -> list[dict]:
    """Events of the first ``converted`` of ``users``, each carrying a list served by ``version`` on ``placement``."""
    ts = at + timedelta(hours=1)
    return [
        {"user_id": f"u{u}", "recommendation_id": IDS.issue(version, placement), "event_type": event, "timestamp": ts}
        for u in list(users)[:converted]
    ]


def table(rows: list[dict]) -> pa.Table:  # type: ignore[type-arg]
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("user_id", pa.string()),
                ("recommendation_id", pa.string()),
                ("event_type", pa.string()),
                ("timestamp", pa.timestamp("us", tz="UTC")),
            ]
        ),
    )


def report_of(rows: list[dict], exposed: dict[str, set[str]]):  # type: ignore[no-untyped-def,type-arg]
    served = {v: 3 * len(u) for v, u in exposed.items()}
    return experiment_report(table(rows), exposed, served, "1", "2", START.isoformat(), "exp1", IDS)


def test_the_per_user_report_finds_a_planted_difference_and_not_a_missing_one() -> None:
    exposed = {"1": {f"u{u}" for u in range(4000)}, "2": {f"u{u}" for u in range(4000, 8000)}}
    repeat = clicks(range(4000), "1", 200) * 3  # a user who clicks three lists still counts once
    better = report_of(repeat + clicks(range(4000, 8000), "2", 320), exposed)
    assert better.production.click_through.rate == 0.05 and better.challenger.click_through.rate == 0.08
    assert better.production.users == 4000 and better.production.served_lists == 12_000
    assert better.click_through_p < 0.001 and better.tests["click_through"] == "two_proportion_z"
    assert better.challenger.click_through.low > better.production.click_through.high
    same = report_of(clicks(range(4000), "1", 200) + clicks(range(4000, 8000), "2", 205), exposed)
    assert same.click_through_p > 0.5
    ci = binomtest(200, 4000).proportion_ci(method="wilson")
    assert (same.production.click_through.low, same.production.click_through.high) == (ci.low, ci.high)
    assert rate(0, 0).high == 1.0


def test_both_arms_count_the_same_window_and_only_ids_the_api_issued() -> None:
    exposed = {"1": {f"u{u}" for u in range(100)}, "2": {f"u{u}" for u in range(100, 200)}}
    history = clicks(range(100), "1", 90, at=START - timedelta(days=30))  # production's clicks before the start
    forged = [
        row | {"recommendation_id": "2-home-" + "0" * 24 + "-" + "f" * 16} for row in clicks(range(100, 200), "2", 45)
    ] + [  # stored before the edge checked ids: any text, non-ASCII included, is skipped and counted, never a crash
        row | {"recommendation_id": "2-hömé-" + "0" * 24 + "-" + "é" * 16} for row in clicks(range(100, 200), "2", 5)
    ]
    wrong_user = clicks(range(100, 150), "1", 10)  # a challenger user's event claiming a production list
    real = (
        clicks(range(100), "1", 10)
        + clicks(range(100, 200), "2", 12)
        + clicks(range(100, 200), "2", 4, event="add_to_cart")
    )
    report = report_of(history + forged + wrong_user + real, exposed)
    assert report.production.click_through.hits == 10 and report.challenger.click_through.hits == 12
    assert report.challenger.add_to_cart.hits == 4 and report.production.add_to_cart.hits == 0
    assert report.ignored == {
        "before_the_experiment": 90,
        "not_issued_by_this_api": 50,
        "other_variant_or_user": 10,
        "users_served_both": 0,
    }
    assert report.tests["add_to_cart"] == "fisher_exact"  # small counts


def test_the_report_breaks_down_per_placement() -> None:
    exposed = {"1": {f"u{u}" for u in range(100)}, "2": {f"u{u}" for u in range(100, 200)}}
    rows = (
        clicks(range(100), "1", 10)
        + clicks(range(100), "1", 4, event="add_to_cart", placement="cart")
        + clicks(range(100, 200), "2", 20, placement="product")
    )
    report = report_of(rows, exposed)
    assert sorted(report.placements) == ["cart", "home", "product"]
    assert report.placements["home"]["1"]["click_through"].hits == 10
    assert report.placements["cart"]["1"]["add_to_cart"].rate == 0.04
    assert report.placements["product"]["2"]["click_through"].hits == 20
    assert report.placements["product"]["1"]["click_through"].hits == 0


def test_the_report_counts_each_arms_new_items_and_their_clicks() -> None:
    exposed = {"1": {f"u{u}" for u in range(100)}, "2": {f"u{u}" for u in range(100, 200)}}
    schema = pa.schema([*table([]).schema, ("item_id", pa.string())])

    def on(rows: list[dict], item: str) -> list[dict]:  # type: ignore[type-arg]
        return [row | {"item_id": item} for row in rows]

    rows = (
        on(clicks(range(100), "1", 6), "n1")  # production's lists, on its new item
        + on(clicks(range(100), "1", 9), "old")  # a click, not on a new item
        + on(clicks(range(100, 200), "2", 15), "n2")
        + on(clicks(range(100, 200), "2", 4), "n1")  # n1 is not new in the challenger's lists
        + on(clicks(range(100, 200), "2", 3, event="add_to_cart"), "n2")  # not a click
        + on(clicks(range(100), "2", 5), "n2")  # production's users claiming the challenger's lists
        + on(clicks(range(100, 200), "2", 7, at=START - timedelta(days=2)), "n2")  # before the start
    )
    served = {v: 3 * len(u) for v, u in exposed.items()}
    report = experiment_report(
        pa.Table.from_pylist(rows, schema=schema),
        exposed,
        served,
        "1",
        "2",
        START.isoformat(),
        "exp1",
        IDS,
        new_served={"1": 60, "2": 100},
        new_shown={"1": {"n1"}, "2": {"n2", "n3"}},
    )
    prod, chal = report.production.new_items, report.challenger.new_items
    assert (prod.impressions, prod.items, prod.clicks, prod.click_rate) == (60, 1, 6, 0.1)
    assert (chal.impressions, chal.items, chal.clicks, chal.click_rate) == (100, 2, 15, 0.15)
    assert report_of([], exposed).production.new_items.impressions == 0  # an API that counted none


def purchases(users: range, spend: np.ndarray, *, at: datetime = START, version: str | None = None) -> list[dict]:  # type: ignore[type-arg]
    """One purchase per user with ``spend > 0``: two of an item at half the spend (no recommendation id, unless
    ``version`` says which arm's list it came from)."""
    return [
        {
            "user_id": f"u{u}",
            "recommendation_id": IDS.issue(version, "home") if version else None,
            "event_type": "purchase",
            "timestamp": at + timedelta(hours=2),
            "price": float(value) / 2,
            "quantity": 2,
        }
        for u, value in zip(users, spend, strict=True)
        if value > 0
    ]


def money_report(rows: list[dict], exposed: dict[str, set[str]]):  # type: ignore[no-untyped-def,type-arg]
    schema = pa.schema([*table([]).schema, ("price", pa.float64()), ("quantity", pa.int32())])
    served = {v: len(u) for v, u in exposed.items()}
    return experiment_report(
        pa.Table.from_pylist(rows, schema=schema), exposed, served, "1", "2", START.isoformat(), "exp1", IDS
    )


def spend(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """A shop's spend per user: a fifth buy, at lognormal amounts around 40 x ``scale``."""
    return np.where(rng.random(n) < 0.2, rng.lognormal(np.log(40 * scale), 0.8, n), 0.0).round(2)


def test_the_report_finds_a_planted_revenue_lift_and_its_size() -> None:
    rng = np.random.default_rng(3)
    exposed = {"1": {f"u{u}" for u in range(3000)}, "2": {f"u{u}" for u in range(3000, 6000)}}
    a, b = spend(rng, 3000, 1.0), spend(rng, 3000, 1.4)  # the challenger's users spend 40% more
    rows = purchases(range(3000), a) + purchases(range(3000, 6000), b)
    rows += purchases(range(3000), np.full(3000, 500.0), at=START - timedelta(days=3))  # before the start
    rows += purchases(range(6000, 6100), np.full(100, 900.0))  # users no arm served
    rows += [rows[0] | {"price": None, "recommendation_id": IDS.issue("1", "home")}]  # unpriced: counted, worth 0
    report = money_report(rows, exposed)
    prod, chal, lift = report.production.revenue, report.challenger.revenue, report.revenue_per_user_lift
    assert prod.total == round(a.sum(), 6) and chal.total == round(b.sum(), 6)
    assert prod.per_user == round(a.mean(), 6) and prod.buyers == int((a > 0).sum()) and prod.unpriced == 1
    assert lift.method == "BCa" and lift.difference == round(b.mean() - a.mean(), 6)
    assert lift.low is not None and lift.high is not None and 0 < lift.low < lift.difference < lift.high
    planted = 0.2 * 40 * np.exp(0.8**2 / 2) * 0.4  # E[spend] x 0.4: what the challenger adds per user
    assert lift.low < planted < lift.high


def test_the_report_finds_no_revenue_lift_where_none_is_planted_and_attributes_by_id() -> None:
    rng = np.random.default_rng(4)
    exposed = {"1": {f"u{u}" for u in range(3000)}, "2": {f"u{u}" for u in range(3000, 6000)}}
    a, b = spend(rng, 3000, 1.0), spend(rng, 3000, 1.0)
    rows = purchases(range(1000), a[:1000], version="1") + purchases(range(1000, 3000), a[1000:])
    rows += purchases(range(3000, 6000), b)
    report = money_report(rows, exposed)
    lift = report.revenue_per_user_lift
    assert lift.low is not None and lift.high is not None and lift.low < 0 < lift.high
    assert report.production.revenue.attributed == round(a[:1000].sum(), 6)
    assert report.challenger.revenue.attributed == 0.0
    none = money_report([], exposed).revenue_per_user_lift  # nothing bought: no spread to resample
    assert (none.difference, none.low, none.high, none.method) == (0.0, None, None, "none")


def test_users_served_both_arms_count_in_neither() -> None:
    exposed = {"1": {f"u{u}" for u in range(100)}, "2": {f"u{u}" for u in range(90, 200)}}  # u90-u99 in both
    rows = clicks(range(100), "1", 100) + purchases(range(90, 200), np.full(110, 10.0))
    report = money_report(rows, exposed)
    assert report.production.users == 90 and report.challenger.users == 100
    assert report.production.click_through.hits == 90 and report.challenger.revenue.total == 1000.0
    assert report.ignored["users_served_both"] == 10


def test_a_big_experiment_takes_the_percentile_interval() -> None:
    rng = np.random.default_rng(5)
    lift = revenue_lift(spend(rng, 20_000, 1.0), spend(rng, 20_000, 1.2))
    assert lift.method == "percentile" and lift.low is not None and lift.high is not None
    assert 0 < lift.low < lift.difference < lift.high


def test_a_published_challenger_serves_its_share_and_the_report_counts_its_users(shop_settings: Settings) -> None:
    settings = shop_settings.model_copy(
        update={"experiment_share": 0.3, "api_keys": SecretStr("page:events,ops:admin")}
    )
    first = train_and_register(settings, TrainConfig(family="itemknn"))
    promote(settings, "production", first.model_version)
    publish_model(settings)
    second = train_and_register(settings, TrainConfig(family="als", params={"factors": 8, "iterations": 3}))
    published = publish_model(settings, alias=None, version=second.model_version, challenger=True)
    r = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    keys = Keys()
    assert r.get(keys.challenger) == published.version
    experiment_id = running_id(r)

    users = [f"u{i}" for i in range(200)]
    page = {"X-API-Key": "page"}
    with TestClient(create_app(settings)) as api:
        answers = {u: api.get(f"/v1/users/{u}/recommendations", headers=page).json() for u in users}
        api.get("/v1/users/u0/recommendations", headers=page)  # a second list for one user: one user still
        now = datetime.now(UTC).isoformat()
        events = [
            {
                "user_id": u,
                "item_id": "i1",
                "event_type": "view",
                "timestamp": now,
                "recommendation_id": answers[u]["recommendation_id"],
            }
            for u in users[:60]
        ]
        forged = {
            "user_id": "u61",
            "item_id": "i1",
            "event_type": "view",
            "timestamp": now,
            "recommendation_id": "2-home-0-0",
        }
        assert api.post("/v1/events", json=[*events, forged], headers=page).status_code == 202
    on_challenger = {u for u in users if in_challenger(pseudonymize(u, "test-secret"), 0.3)}
    assert 30 < len(on_challenger) < 90
    for user, body in answers.items():
        expected = second.model_version if user in on_challenger else first.model_version
        assert body["model_version"] == expected and IDS.verify(body["recommendation_id"]).model_version == expected  # type: ignore[union-attr]
    exposed = {v: r.smembers(keys.exposed(experiment_id, v)) for v in (first.model_version, second.model_version)}
    assert exposed[second.model_version] == {pseudonymize(u, "test-secret") for u in on_challenger}
    assert len(exposed[first.model_version]) == len(users) - len(on_challenger)

    drain_events(settings)
    report = experiment(settings)
    clicked_challenger = len(on_challenger & set(users[:60]))
    assert (
        report["challenger"]["users"] == len(on_challenger)
        and report["challenger"]["click_through"]["hits"] == clicked_challenger
    )
    assert report["production"]["click_through"]["hits"] == 60 - clicked_challenger
    assert report["production"]["served_lists"] == len(users) - len(on_challenger) + (0 if "u0" in on_challenger else 1)
    assert report["ignored"]["not_issued_by_this_api"] == 1 and report["mlflow_run_id"]

    assert stop_experiment(settings) == {"stopped": published.version, "experiment_id": experiment_id}
    assert r.get(keys.challenger) is None and not list(r.scan_iter(match=keys.experiment_data(experiment_id)))
    assert "skipped" in experiment(settings)


def running_id(r: redis.Redis) -> str:
    return str(json.loads(str(r.get(Keys().experiment)))["id"])


def test_a_new_challenger_starts_a_new_experiment_from_zero(shop_settings: Settings) -> None:
    first = train_and_register(shop_settings, TrainConfig(family="itemknn"))
    promote(shop_settings, "production", first.model_version)
    publish_model(shop_settings)
    one = publish_model(shop_settings, alias=None, version=first.model_version, challenger=True)
    r = redis.Redis.from_url(str(shop_settings.redis_url), decode_responses=True)
    old_id = running_id(r)
    r.hincrby(Keys().served(old_id), first.model_version, 5)
    two = publish_model(shop_settings, alias=None, version=first.model_version, challenger=True)
    assert two.previous == one.version
    new_id = running_id(r)
    assert new_id != old_id and not r.exists(Keys().served(old_id))
