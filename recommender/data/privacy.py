"""Pseudonymization of user ids with a keyed HMAC.

Raw user ids never reach storage or logs: ingest, the API and the CLI all call
:func:`pseudonymize` with the same secret, so the same person maps to the same
opaque id everywhere, and nobody without the secret can reverse or recompute it.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Iterable

import numpy as np
import pandas as pd

DIGEST_CHARS = 32  # 128 bits of HMAC-SHA256, hex encoded


def pseudonymize(user_id: str, secret: str | bytes) -> str:
    """Map a raw user id to its stable pseudonym (HMAC-SHA256, 32 hex chars)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.digest(key, user_id.encode("utf-8"), "sha256").hex()[:DIGEST_CHARS]  # one-shot C HMAC


def pseudonymize_many(user_ids: Iterable[str] | pd.Series, secret: str | bytes) -> np.ndarray:
    """Vectorized :func:`pseudonymize`: each distinct id is hashed once."""
    codes, uniques = pd.factorize(pd.Series(list(user_ids) if not isinstance(user_ids, pd.Series) else user_ids))
    hashed = np.array([pseudonymize(str(u), secret) for u in uniques], dtype=object)
    out = np.empty(len(codes), dtype=object)
    valid = codes >= 0
    out[valid] = hashed[codes[valid]] if len(hashed) else []
    out[~valid] = None
    return out


SIGNATURE_FORMAT = re.compile(r"t=([0-9]{1,12}),v1=([0-9a-fA-F]{64})")
"""``t=<unix seconds>,v1=<HMAC-SHA256 hex>``, the shape of a Stripe webhook signature."""
FUTURE_SKEW_SECONDS = 300
"""How far ahead of this clock a signature's time may be (the signer's clock runs a little ahead)."""


class SignatureError(ValueError):
    """A user signature that does not hold; ``expired`` tells a stale or future-dated one from a wrong one."""

    def __init__(self, reason: str, expired: bool = False) -> None:
        super().__init__(reason)
        self.expired = expired


def sign_user(user_id: str, secret: str | bytes, at: float | None = None) -> str:
    """The signature a shop's backend gives its page for a signed-in user: ``t=<unix seconds>,v1=<hex>``.

    ``v1`` is HMAC-SHA256 of ``user-v1:<t>:<user_id>`` under the signing secret, so the time cannot be
    changed without the secret (the ``user-v1:`` prefix keeps it apart from the earlier untimed signatures,
    HMAC of ``user:<user_id>``: none of those is valid here, whatever the user id). With
    ``RECSYS_REQUIRE_USER_SIGNATURE`` the API takes events and answers personalized reads for ``user_id`` only
    with this value in ``X-User-Signature``, for ``RECSYS_USER_SIGNATURE_MAX_AGE`` seconds after ``t`` (keys of
    the write role are trusted).
    """
    t = int(time.time() if at is None else at)
    return f"t={t},v1={_user_mac(user_id, t, secret)}"


def _user_mac(user_id: str, t: int, secret: str | bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.digest(key, f"user-v1:{t}:".encode() + user_id.encode("utf-8"), "sha256").hex()


def verify_user_signature(
    user_id: str, signature: str | None, secret: str | bytes, max_age: float, now: float | None = None
) -> None:
    """Raise :class:`SignatureError` with the reason unless ``signature`` is :func:`sign_user` of ``user_id``,
    made at most ``max_age`` seconds ago (and not more than :data:`FUTURE_SKEW_SECONDS` ahead).

    Any text is safe to pass (a header of any characters): only the documented shape is read, and the
    comparison is of bytes, in constant time.
    """
    if signature is None:
        raise SignatureError("X-User-Signature is missing")
    shape = SIGNATURE_FORMAT.fullmatch(signature.strip())
    if shape is None:
        raise SignatureError("X-User-Signature is not t=<unix seconds>,v1=<64 hex characters> (privacy.sign_user)")
    t, mac = int(shape.group(1)), shape.group(2).lower()
    if not hmac.compare_digest(_user_mac(user_id, t, secret).encode(), mac.encode()):
        raise SignatureError("X-User-Signature is not the shop's signature of this user id")
    age = (time.time() if now is None else now) - t
    if age > max_age:
        raise SignatureError(f"X-User-Signature expired: signed {int(age)} s ago, at most {int(max_age)} s", True)
    if age < -FUTURE_SKEW_SECONDS:
        raise SignatureError(f"X-User-Signature is dated {int(-age)} s in the future: check the signer's clock", True)
