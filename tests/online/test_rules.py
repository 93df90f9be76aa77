"""The rules engine: every rule kind, every conflict, and bad rules rejected with their reasons."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.online.rules import Candidates, RulesError, RuleSet, arrange, mmr, mmr_window, parse_rules

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
# ten candidates, best first: i0..i9; even items are shoes, odd are bags; brand acme for i0-i2
CANDIDATES = [(f"i{k}", 1.0 - k / 10) for k in range(10)]
ATTRS = {
    f"i{k}": {
        "category": "shoes" if k % 2 == 0 else "bags",
        "price": 10.0 * (k + 1),
        "brand": "acme" if k < 3 else "zed",
    }
    for k in range(10)
}


def ids(rules: dict | RuleSet, n: int = 5, **kwargs) -> list[str]:  # type: ignore[type-arg]
    ruleset = rules if isinstance(rules, RuleSet) else parse_rules(rules)
    return [i for i, _ in arrange(CANDIDATES, ATTRS, ruleset, n, NOW, **kwargs)]


def where(field: str, op: str, value: object) -> list[dict[str, object]]:
    return [{"field": field, "op": op, "value": value}]


def test_no_rules_is_the_model_order_minus_unavailable_and_excluded() -> None:
    assert ids({}) == ["i0", "i1", "i2", "i3", "i4"]
    assert ids({}, unavailable={"i1"}, excluded={"i3"}) == ["i0", "i2", "i4", "i5", "i6"]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (where("category", "in", ["bags"]), ["i1", "i3", "i5", "i7", "i9"]),
        (where("category", "not_in", ["bags"]), ["i0", "i2", "i4", "i6", "i8"]),
        (where("price", "between", [30, 60]), ["i2", "i3", "i4", "i5"]),
        (where("price", "gte", 80), ["i7", "i8", "i9"]),
        (where("price", "lte", 20), ["i0", "i1"]),
        (where("brand", "eq", "acme"), ["i0", "i1", "i2"]),
        (where("brand", "ne", "acme"), ["i3", "i4", "i5", "i6", "i7"]),
        (where("colour", "eq", "red"), []),  # a missing attribute matches no eq
        (where("colour", "ne", "red"), ["i0", "i1", "i2", "i3", "i4"]),  # ... and every ne
    ],
)
def test_filters(condition: list[dict[str, object]], expected: list[str]) -> None:
    assert ids({"rules": [{"kind": "filter", "where": condition}]}) == expected


def test_conditions_of_one_filter_all_hold_and_filters_combine() -> None:
    both = [*where("category", "eq", "shoes"), *where("price", "gte", 40)]
    assert ids({"rules": [{"kind": "filter", "where": both}]}) == ["i4", "i6", "i8"]
    two = [
        {"kind": "filter", "where": where("category", "eq", "shoes")},
        {"kind": "filter", "where": where("brand", "eq", "zed")},
    ]
    assert ids({"rules": two}) == ["i4", "i6", "i8"]


def test_boost_lifts_and_bury_sinks_matching_items() -> None:
    boosted = ids({"rules": [{"kind": "boost", "where": where("brand", "eq", "zed"), "factor": 3}]}, n=3)
    assert boosted == ["i3", "i4", "i5"]  # 0.7 * 3 > 1.0
    buried = ids({"rules": [{"kind": "bury", "where": where("category", "eq", "shoes"), "factor": 0.1}]}, n=4)
    assert buried == ["i1", "i3", "i5", "i7"]


def test_pin_at_position_inside_its_window_only() -> None:
    pin = {"kind": "pin", "item_id": "i9", "position": 2}
    assert ids({"rules": [pin]}, n=4) == ["i0", "i9", "i1", "i2"]
    later = {**pin, "start": (NOW + timedelta(hours=1)).isoformat()}
    assert ids({"rules": [later]}, n=4) == ["i0", "i1", "i2", "i3"]
    ended = {**pin, "start": (NOW - timedelta(days=2)).isoformat(), "end": (NOW - timedelta(days=1)).isoformat()}
    assert ids({"rules": [ended]}, n=4) == ["i0", "i1", "i2", "i3"]
    outside = {"kind": "pin", "item_id": "new-item", "position": 1}  # an item the model never proposed
    assert ids({"rules": [outside]}, n=3) == ["new-item", "i0", "i1"]


def test_promoted_share_of_the_slots() -> None:
    rules = {"rules": [{"kind": "promote", "where": where("price", "gte", 90), "share": 0.2}]}
    out = ids(rules, n=10)
    assert sorted(out) == sorted(i for i, _ in CANDIDATES) and out[:5].count("i8") + out[:5].count("i9") == 1
    shown = ids(rules, n=5)
    assert len(shown) == 5 and sum(i in ("i8", "i9") for i in shown) == 1  # 20% of 5 slots


def test_diversity_caps_a_category_and_keeps_the_list_full() -> None:
    out = ids({"diversity": {"max_per_category": 1}}, n=4)
    assert out[:2] == ["i0", "i1"] and len(out) == 4  # over-cap items only fill what is left
    many = [(f"s{k}", 1.0 - k / 100) for k in range(8)] + [("b0", 0.1), ("b1", 0.05)]
    attrs = {i: {"category": "shoes" if i.startswith("s") else "bags"} for i, _ in many}
    top = [i for i, _ in arrange(many, attrs, parse_rules({"diversity": {"max_per_category": 3}}), 5, NOW)]
    assert top == ["s0", "s1", "s2", "b0", "b1"]


def test_mmr_trades_relevance_for_novelty() -> None:
    twins = {"i0": (["i1", "i2"], [0.9, 0.9]), "i1": (["i2"], [0.5])}  # the top three are near copies
    plain = ids({"diversity": {"mmr_lambda": 1.0}}, n=3, similar=twins)
    diverse = ids({"diversity": {"mmr_lambda": 0.3}}, n=3, similar=twins)
    assert plain == ["i0", "i1", "i2"] and diverse == ["i0", "i3", "i4"]


def test_mmr_takes_greedily_the_best_marginal_relevance() -> None:
    """The vectorized MMR against the definition, written out plainly, on random similarities."""
    rng = np.random.default_rng(3)
    pool = [(f"c{k}", float(s)) for k, s in enumerate(sorted(rng.random(60), reverse=True))]
    similar = {
        item: ([f"c{o}" for o in others], [float(v) for v in rng.random(len(others))])
        for item, others in ((i, rng.choice(60, 8, replace=False)) for i, _ in pool)
    }

    def sim(a: str, b: str) -> float:
        def one(x: str, y: str) -> float:
            others, scores = similar[x]
            return scores[others.index(y)] / max(scores) if y in others else 0.0

        return max(one(a, b), one(b, a))

    lam, n = 0.6, 12
    window = pool[: mmr_window(n)]  # MMR chooses among the best 3n (36 of 60)
    top, bottom = window[0][1], window[-1][1]
    rest, taken = list(window), []
    while len(taken) < n:
        best = max(rest, key=lambda p: lam * (p[1] - bottom) / (top - bottom) - (1 - lam) * max(
            (sim(p[0], t[0]) for t in taken), default=0.0))  # fmt: skip
        taken.append(best)
        rest.remove(best)
    assert mmr(pool, lam, similar, n)[:n] == taken
    assert sorted(mmr(pool, lam, similar, n)) == sorted(pool)  # a reordering: nothing lost


def test_conflicts_resolve_in_the_documented_order() -> None:
    pin = {"kind": "pin", "item_id": "i9", "position": 1}
    # unavailable (hidden or out of stock) beats pin
    assert "i9" not in ids({"rules": [pin]}, unavailable={"i9"})
    # pin beats filter: the pinned bag shows although the placement shows only shoes
    shoes = {"kind": "filter", "where": where("category", "eq", "shoes")}
    assert ids({"rules": [shoes, pin]}, n=3) == ["i9", "i0", "i2"]
    # filter beats boost: a boosted bag stays out
    boost_bags = {"kind": "boost", "where": where("category", "eq", "bags"), "factor": 50}
    assert ids({"rules": [shoes, boost_bags]}, n=3) == ["i0", "i2", "i4"]
    # filter beats promote: promoted items must pass the filters too
    promote_bags = {"kind": "promote", "where": where("category", "eq", "bags"), "share": 0.5}
    assert ids({"rules": [shoes, promote_bags]}, n=4) == ["i0", "i2", "i4", "i6"]
    # a pin of an excluded item (already shown, in the cart) is not shown either
    assert "i9" not in ids({"rules": [pin]}, excluded={"i9"})


def test_bad_rules_are_rejected_each_with_its_reasons() -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(
            {
                "rules": [
                    {"kind": "filter", "where": where("price", "between", [9, 1])},
                    {"kind": "boost", "where": where("brand", "eq", "x"), "factor": 0.5},
                    {"kind": "pin", "item_id": "i1", "position": 0},
                    {"kind": "pin", "item_id": "i1", "position": 1, "start": "2026-12-01T00:00:00"},
                    {"kind": "teleport"},
                    {"kind": "filter", "where": where("brand", "eq", "ok")},  # the one good rule
                    {"kind": "promote", "where": where("brand", "in", []), "share": 2},
                ],
                "diversity": {"max_per_category": 0},
            }
        )
    errors = {e["rule"]: " ".join(e["reasons"]) for e in caught.value.errors}
    assert set(errors) == {0, 1, 2, 3, 4, 6, "diversity"}
    assert "low <= high" in errors[0] and "greater than 1" in errors[1] and "greater than or equal to 1" in errors[2]
    assert "time zone" in errors[3] and "teleport" in errors[4] and "1 to 1000 values" in errors[6]
    with pytest.raises(RulesError, match="invalid"):
        parse_rules(
            {"rules": [{"kind": "pin", "item_id": "a", "position": 1}, {"kind": "pin", "item_id": "b", "position": 1}]}
        )
    with pytest.raises(RulesError):
        parse_rules(["not", "an", "object"])
    with pytest.raises(RulesError):
        parse_rules({"rules": [], "surprise": 1})


def test_a_request_narrows_the_placement_rules() -> None:
    rules = parse_rules({"rules": [{"kind": "pin", "item_id": "i9", "position": 1}]})
    narrowed = rules.narrowed(category="shoes", max_per_category=2)
    assert ids(narrowed, n=4) == ["i9", "i0", "i2", "i4"]
    assert rules.narrowed() is rules and not rules.needs_attributes and narrowed.needs_attributes


@pytest.mark.parametrize(
    ("rules", "reason"),
    [
        (  # one item pinned twice: shown twice before
            [{"kind": "pin", "item_id": "i9", "position": 1}, {"kind": "pin", "item_id": "i9", "position": 3}],
            "i9 is pinned twice",
        ),
        (  # two timed pins overlapping on one position: one was dropped in silence
            [
                {
                    "kind": "pin",
                    "item_id": "a",
                    "position": 2,
                    "start": "2026-12-01T00:00:00Z",
                    "end": "2026-12-10T00:00:00Z",
                },
                {"kind": "pin", "item_id": "b", "position": 2, "start": "2026-12-05T00:00:00Z"},
            ],
            "position 2 is pinned twice",
        ),
        (  # the same item at two positions in overlapping windows
            [
                {"kind": "pin", "item_id": "a", "position": 1, "end": "2026-12-10T00:00:00Z"},
                {"kind": "pin", "item_id": "a", "position": 4, "start": "2026-12-09T00:00:00Z"},
            ],
            "a is pinned twice",
        ),
    ],
)
def test_pins_that_contradict_each_other_are_refused_with_a_reason(rules: list[dict], reason: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(RulesError) as caught:
        parse_rules({"rules": rules})
    assert reason in " ".join(" ".join(e["reasons"]) for e in caught.value.errors)


def test_pins_in_windows_that_do_not_overlap_may_share_an_item_or_a_position() -> None:
    december = [
        {"kind": "pin", "item_id": "a", "position": 1, "end": "2026-12-24T00:00:00Z"},
        {"kind": "pin", "item_id": "a", "position": 3, "start": "2026-12-24T00:00:00Z"},
        {"kind": "pin", "item_id": "b", "position": 1, "start": "2026-12-24T00:00:00Z"},
    ]
    rules = parse_rules({"rules": december})
    assert ids(rules, n=4) == ["a", "i0", "i1", "i2"]  # NOW is Dec 1: only the first window


def test_a_rule_set_stored_before_the_checks_still_shows_an_item_once() -> None:
    twice = RuleSet.model_validate(
        {"rules": [{"kind": "pin", "item_id": "i9", "position": 1}, {"kind": "pin", "item_id": "i9", "position": 3}]}
    )  # validated as a model, not by parse_rules: what an old stored entry loads as
    out = ids(twice, n=5)
    assert out.count("i9") == 1 and out[0] == "i9" and len(out) == 5


PIN9 = {"kind": "pin", "item_id": "i9", "position": 1}
SHOES = {"kind": "filter", "where": where("category", "eq", "shoes")}
BOOST_BAGS = {"kind": "boost", "where": where("category", "eq", "bags"), "factor": 50}
BURY_BAGS = {"kind": "bury", "where": where("category", "eq", "bags"), "factor": 0.01}
PIN1_AT2 = {"kind": "pin", "item_id": "i1", "position": 2}
PROMOTE_BAGS = {"kind": "promote", "where": where("category", "eq", "bags"), "share": 0.5}
PROMOTE_PRICEY = {"kind": "promote", "where": where("price", "gte", 70), "share": 0.5}
CAP1 = {"max_per_category": 1}
TWINS = {"i0": (["i1", "i2"], [1.0, 1.0]), "i1": (["i0", "i2"], [1.0, 1.0]), "i2": (["i0", "i1"], [1.0, 1.0])}


@pytest.mark.parametrize(
    ("pair", "rules", "kwargs", "n", "expected"),
    [
        ("unavailable beats pin", {"rules": [PIN9]}, {"unavailable": {"i9"}}, 3, ["i0", "i1", "i2"]),
        ("excluded beats pin", {"rules": [PIN9]}, {"excluded": {"i9"}}, 3, ["i0", "i1", "i2"]),
        ("unavailable beats promote", {"rules": [PROMOTE_PRICEY]}, {"unavailable": {"i6", "i7", "i8", "i9"}}, 4,
         ["i0", "i1", "i2", "i3"]),
        ("pin beats filter", {"rules": [SHOES, PIN9]}, {}, 3, ["i9", "i0", "i2"]),
        ("pin beats bury", {"rules": [PIN9, BURY_BAGS]}, {}, 3, ["i9", "i0", "i2"]),
        ("pin beats the cap", {"rules": [PIN9], "diversity": CAP1}, {}, 3, ["i9", "i0", "i1"]),
        ("pin beats promote", {"rules": [PIN9, PROMOTE_PRICEY]}, {}, 4, ["i9", "i6", "i7", "i0"]),
        ("pin beats MMR", {"rules": [PIN1_AT2], "diversity": {"mmr_lambda": 0.3}}, {"similar": TWINS}, 3,
         ["i0", "i1", "i3"]),
        ("filter beats boost", {"rules": [SHOES, BOOST_BAGS]}, {}, 3, ["i0", "i2", "i4"]),
        ("filter beats promote", {"rules": [SHOES, PROMOTE_BAGS]}, {}, 4, ["i0", "i2", "i4", "i6"]),
        ("filter beats MMR", {"rules": [SHOES], "diversity": {"mmr_lambda": 0.3}}, {"similar": TWINS}, 3,
         ["i0", "i4", "i6"]),
        ("cap beats promote", {"rules": [PROMOTE_BAGS], "diversity": CAP1}, {}, 4, ["i1", "i0", "i2", "i3"]),
        ("cap beats boost", {"rules": [BOOST_BAGS], "diversity": CAP1}, {}, 3, ["i1", "i0", "i3"]),
        ("cap beats MMR", {"diversity": {**CAP1, "mmr_lambda": 0.3}}, {"similar": {"i0": (["i1"], [1.0])}}, 2,
         ["i0", "i1"]),
        ("promote beats boost", {"rules": [PROMOTE_PRICEY, {"kind": "boost", "where": where("brand", "eq", "acme"),
                                                             "factor": 2}]}, {}, 4, ["i6", "i0", "i7", "i1"]),
        ("promote beats MMR", {"rules": [PROMOTE_PRICEY], "diversity": {"mmr_lambda": 0.3}}, {"similar": TWINS}, 4,
         ["i6", "i0", "i7", "i3"]),
        ("boost, then MMR on the boosted order", {"rules": [BOOST_BAGS], "diversity": {"mmr_lambda": 0.5}},
         {"similar": {"i1": (["i3"], [1.0]), "i3": (["i1"], [1.0])}}, 3, ["i1", "i5", "i7"]),
    ],
)  # fmt: skip
def test_every_pair_of_rule_kinds_resolves_in_the_documented_order(
    pair: str,
    rules: dict,
    kwargs: dict,
    n: int,
    expected: list[str],  # type: ignore[type-arg]
) -> None:
    assert ids(rules, n=n, **kwargs) == expected, pair


FOUR = [(f"x{k}", 1.0 - k / 10) for k in range(8)]
FOUR_ATTRS = {f"x{k}": {"category": "abcd"[k % 4]} for k in range(8)}  # x0 a, x1 b, x2 c, x3 d, x4 a, ...


def test_a_pinned_item_counts_in_its_category_cap() -> None:
    rules = parse_rules({"rules": [{"kind": "pin", "item_id": "x1", "position": 1}], "diversity": CAP1})
    out = [i for i, _ in arrange(FOUR, FOUR_ATTRS, rules, 5, NOW)]
    assert out == ["x1", "x0", "x2", "x3", "x4"]  # not x5, a second b: over-cap items only fill the end


def test_promoted_slots_keep_within_the_category_cap() -> None:
    """The defect: promotion ran after the cap, so a promoted category filled every slot past its cap."""
    candidates, attrs = FOUR, FOUR_ATTRS
    rules = parse_rules(
        {"rules": [{"kind": "promote", "where": where("category", "eq", "a"), "share": 1.0}], "diversity": CAP1}
    )
    out = [i for i, _ in arrange(candidates, attrs, rules, 4, NOW)]
    assert out == ["x0", "x1", "x2", "x3"]  # one promoted a (the cap), then the best of the other categories


@given(
    scores=st.lists(st.floats(-2, 2, allow_nan=False, width=32), min_size=0, max_size=60),
    factors=st.lists(st.sampled_from([0.2, 0.5, 1.5, 3.0]), min_size=1, max_size=3),
    n=st.integers(1, 15),
    gone=st.sets(st.integers(0, 59), max_size=10),
    pin=st.one_of(st.none(), st.integers(0, 59)),
)
@settings(max_examples=300, deadline=None)
def test_reweighting_judges_fewer_candidates_but_shows_what_a_full_sort_shows(
    scores: list[float], factors: list[float], n: int, gone: set[int], pin: int | None
) -> None:
    """Passing over candidates that cannot reach the top gives the same list as reweighting and sorting all."""
    pool = [(f"c{k}", s) for k, s in enumerate(scores)] + [(f"f{k}", 0.0) for k in range(5)]  # fillers after
    attrs = {f"c{k}": {"category": "abc"[k % 3]} for k in range(60)}
    kinds = [("boost" if f > 1 else "bury", f) for f in factors]
    rules = [{"kind": k, "where": where("category", "eq", "abc"[i]), "factor": f} for i, (k, f) in enumerate(kinds)]
    if pin is not None:
        rules.append({"kind": "pin", "item_id": f"c{pin}", "position": 2})
    unavailable = {f"c{k}" for k in gone}
    got = arrange(pool, attrs, parse_rules({"rules": rules}), n, NOW, unavailable=unavailable)
    pinned = {f"c{pin}"} - unavailable if pin is not None else set()
    factor = {i: math.prod(f for (k, f), c in zip(kinds, "abc", strict=False) if attrs.get(i, {}).get("category") == c)
              for i, _ in pool}  # fmt: skip
    rest = sorted(
        ((i, s * factor[i]) for i, s in pool if i not in unavailable and i not in pinned),
        key=lambda p: -p[1],
    )[: n - len(pinned)]
    if pinned:
        own = dict(pool)
        rest.insert(min(1, len(rest)), (f"c{pin}", own.get(f"c{pin}", 0.0)))
    assert got == rest[:n]


@given(
    first=st.lists(st.floats(-2, 2, allow_nan=False, width=32), min_size=0, max_size=40),
    second=st.lists(st.tuples(st.integers(0, 59), st.floats(-2, 2, allow_nan=False, width=32)), max_size=30),
    sort_second=st.booleans(),
    factors=st.lists(st.sampled_from([0.2, 0.5, 1.5, 3.0]), min_size=1, max_size=3),
    n=st.integers(1, 15),
    pin=st.one_of(st.none(), st.integers(0, 59)),
)
@settings(max_examples=300, deadline=None)
def test_reweighting_passes_over_a_sorted_list_tail_and_shows_what_reading_it_all_shows(
    first: list[float],
    second: list[tuple[int, float]],
    sort_second: bool,
    factors: list[float],
    n: int,
    pin: int | None,
) -> None:
    """Lists given as Candidates (a sorted model list, then one that repeats some of its items, sorted or not,
    then unscored fillers) arrange as their distinct items read one by one do: same items, scores and order."""
    ranked = sorted(first, reverse=True)
    items = sorted(second, key=lambda p: -p[1]) if sort_second else second
    lists = [
        ([f"c{k}" for k in range(len(ranked))], ranked),
        ([f"c{k}" for k, _ in items], [s for _, s in items]),
        ([f"f{k}" for k in range(5)], [0.0] * 5),
    ]
    attrs = {f"c{k}": {"category": "abc"[k % 3]} for k in range(60)}
    rules = [
        {"kind": "boost" if f > 1 else "bury", "where": where("category", "eq", "abc"[i]), "factor": f}
        for i, f in enumerate(factors)
    ]
    if pin is not None:
        rules.append({"kind": "pin", "item_id": f"c{pin}", "position": 2})
    ruleset = parse_rules({"rules": rules})
    candidates = Candidates(lists)
    assert arrange(candidates, attrs, ruleset, n, NOW) == arrange(list(candidates), attrs, ruleset, n, NOW)
