"""One settings object, read from RECSYS_* variables, with no side effects."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from recommender.config import Settings


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("RECSYS_EVENT_WEIGHTS", json.dumps({"view": 1, "purchase": 5}))
    s = Settings()
    assert s.home_abs == (tmp_path / "h").resolve()
    assert s.event_types == ("view", "purchase")
    assert s.iceberg_catalog_uri == f"sqlite:///{tmp_path / 'h' / 'catalog.db'}"
    assert s.iceberg_warehouse.startswith("file://")


def test_building_settings_creates_nothing(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "not-yet")
    _ = (s.iceberg_catalog_uri, s.iceberg_warehouse)
    assert not (tmp_path / "not-yet").exists()


def test_empty_event_weights_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one event type"):
        Settings(home=tmp_path, event_weights={})


STRONG = "x" * 32


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({}, "RECSYS_HMAC_SECRET is a placeholder"),
        ({"hmac_secret": "change-me-openssl-rand-hex-32"}, "RECSYS_HMAC_SECRET is a placeholder"),
        ({"hmac_secret": "short-but-random"}, "RECSYS_HMAC_SECRET is shorter than 32 bytes"),
        ({"hmac_secret": STRONG, "api_keys": "shop-key-change-me-0123456789abcdef:read"}, "entry 1 (read)"),
        ({"hmac_secret": STRONG, "api_keys": f"{STRONG}:read,tiny:admin"}, "entry 2 (admin) is shorter"),
        ({"hmac_secret": STRONG, "user_signing_secret": "change-me"}, "RECSYS_USER_SIGNING_SECRET"),
    ],
)
def test_production_refuses_placeholders_and_short_secrets_without_echoing_them(
    tmp_path: Path, overrides: dict[str, str], named: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(named)) as refused:
        Settings(home=tmp_path, env="production", **overrides)
    secrets = [entry.rpartition(":")[0] or entry for value in overrides.values() for entry in value.split(",")]
    assert not [secret for secret in secrets if secret in str(refused.value)]  # nor pydantic's input echo


def test_production_never_opens_reads_for_want_of_keys(tmp_path: Path) -> None:
    assert Settings(home=tmp_path).reads_open  # development without keys: open for local work
    production = Settings(home=tmp_path, env="production", hmac_secret=STRONG)
    assert not production.reads_open and not production.keyless
    assert Settings(home=tmp_path, env="production", hmac_secret=STRONG, open_reads=True).reads_open  # said so


def test_api_keys_are_kept_secret_in_the_settings_repr(tmp_path: Path) -> None:
    assert "k" * 40 not in repr(Settings(home=tmp_path, api_keys="k" * 40 + ":read"))


def test_api_keys_may_carry_a_name_and_a_bad_entry_is_named_by_position_only() -> None:
    keys = Settings(api_keys="abc:read,x:y:admin:merch-team,plain:write").parsed_api_keys()
    assert {k: (v.role, v.name) for k, v in keys.items()} == {
        "abc": ("read", "key1"),
        "x:y": ("admin", "merch-team"),  # a key may hold colons; the name is what follows the role
        "plain": ("write", "key3"),
    }
    with pytest.raises(ValueError, match="entry 2 is not key:role") as bad:
        Settings(api_keys="abc:read,secret-key:admin:bad name!")
    assert "secret-key" not in str(bad.value)
