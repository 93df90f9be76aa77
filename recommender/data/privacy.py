"""Pseudonymization of user ids with a keyed HMAC.

Raw user ids never reach storage or logs: ingest, the API and the CLI all call
:func:`pseudonymize` with the same secret, so the same person maps to the same
opaque id everywhere, and nobody without the secret can reverse or recompute it.
"""

from __future__ import annotations

import hmac
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


def sign_user(user_id: str, secret: str | bytes) -> str:
    """The signature a shop's backend gives its page for a signed-in user (HMAC-SHA256, hex).

    With ``RECSYS_REQUIRE_USER_SIGNATURE`` the API takes events and answers personalized reads for
    ``user_id`` only with this value in ``X-User-Signature`` (keys of the write role are trusted).
    """
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.digest(key, b"user:" + user_id.encode("utf-8"), "sha256").hex()


def user_signature_valid(user_id: str, signature: str | None, secret: str | bytes) -> bool:
    """Whether ``signature`` is :func:`sign_user` of ``user_id`` (compared in constant time)."""
    return signature is not None and hmac.compare_digest(sign_user(user_id, secret), signature.strip().lower())
