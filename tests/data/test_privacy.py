"""Keyed pseudonymization."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import ValidationError

from recommender.config import DEV_SECRET, Settings
from recommender.data.privacy import pseudonymize, pseudonymize_many


def test_hmac_matches_the_standard_construction() -> None:
    expected = hmac.new(b"k", b"user-1", hashlib.sha256).hexdigest()[:32]
    assert pseudonymize("user-1", "k") == expected


def test_key_matters_and_output_is_opaque() -> None:
    a, b = pseudonymize("user-1", "k1"), pseudonymize("user-1", "k2")
    assert a != b
    assert "user-1" not in a and len(a) == 32


def test_many_equals_one_by_one() -> None:
    ids = ["a", "b", "a", "ü-ñ", "b"]
    assert list(pseudonymize_many(ids, "k")) == [pseudonymize(i, "k") for i in ids]


def test_production_refuses_default_secret(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match="RECSYS_HMAC_SECRET"):
        Settings(env="production", home=tmp_path, hmac_secret=DEV_SECRET)
    assert (
        Settings(env="production", home=tmp_path, hmac_secret="a-real-secret-of-32-bytes-or-more").env == "production"
    )
