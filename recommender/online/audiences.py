"""Audiences in Redis: what ``GET /v1/audiences`` asks for and what the audience job stored for it.

The API holds no model, so it cannot score users itself. A request names a target (an item, a category or an
attribute value) and a size; the API keeps the target in ``{prefix}:audiences:wanted`` and answers from what
the audience job (:func:`recommender.registry.audience.refresh_audiences`, the ``refresh_audiences`` DAG, after
every publish and every few minutes) computed for the served version: one ZSET of pseudonyms by score per
target, under the version's namespace (so a version's cleanup removes its audiences). Until then the answer is
*pending*. Forgetting removes the pseudonym from every stored audience of every kept version
(:func:`forget_in_audiences`); the job leaves out users tombstoned or queued for forgetting.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from redis.asyncio import Redis as AsyncRedis

from recommender.online.keys import Keys


class AudienceError(LookupError):
    """No target, a target no item of the model matches, or a model that ranks every user alike."""


class TooManyAudiencesError(RuntimeError):
    """``RECSYS_AUDIENCE_MAX_TARGETS`` targets are kept already."""


@dataclass(frozen=True)
class Target:
    """What an audience is for: one of an item, a category or an attribute ``key=value``."""

    item: str | None = None
    category: str | None = None
    attribute: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.item, self.category, self.attribute)) != 1:
            raise AudienceError("name exactly one of an item, a category or an attribute (key=value)")

    @property
    def label(self) -> str:
        """``item:I``, ``category:C`` or ``attribute:K=V``."""
        if self.item is not None:
            return f"item:{self.item}"
        if self.category is not None:
            return f"category:{self.category}"
        key, value = self.attribute  # type: ignore[misc]
        return f"attribute:{key}={value}"

    @classmethod
    def parse(cls, label: str) -> Target:
        """Inverse of :attr:`label` (``attribute:K=V`` splits at the first ``=``)."""
        kind, _, rest = label.partition(":")
        if kind == "item":
            return cls(item=rest)
        if kind == "category":
            return cls(category=rest)
        if kind == "attribute" and "=" in rest:
            key, value = rest.split("=", 1)
            return cls(attribute=(key, value))
        raise AudienceError(f"not an audience target: {label!r} (item:I, category:C or attribute:K=V)")


@dataclass(frozen=True)
class Stored:
    """What the job stored for one target in one version: its size and model, or why it has none."""

    top: int
    """The size it was computed for (it holds fewer when fewer users qualify)."""
    users: int
    model_version: str
    family: str
    items: int
    computed_at: float
    error: str | None = None
    checked: bool = False
    """Checked against the users forgotten while it was computed (not yet: pending to the API)."""

    def covers(self, top: int) -> bool:
        """Whether it answers a request for ``top`` users (an error answers every size)."""
        return self.error is not None or self.top >= top or self.users < self.top

    def encoded(self) -> bytes:
        """The stored JSON."""
        return orjson.dumps(self.__dict__)

    @classmethod
    def of(cls, value: str | bytes | None) -> Stored | None:
        """Decode a status (None: absent or unreadable)."""
        found = _json(value)
        try:
            return None if found is None else cls(**found)
        except TypeError:  # another release's fields
            return None


def wanted(r: redis.Redis, keys: Keys) -> dict[str, tuple[int, float]]:
    """Every kept target's label -> (the size asked, when last asked); an unreadable entry (0, 0.0): stale."""
    out = {}
    for label, value in r.hgetall(keys.audiences_wanted).items():
        found = _json(value) or {}
        top, read_at = found.get("top"), found.get("read_at")
        valid = isinstance(top, int) and isinstance(read_at, int | float)
        out[str(label)] = (int(top), float(read_at)) if valid else (0, 0.0)  # type: ignore[arg-type]
    return out


def drop_stale(r: redis.Redis, keys: Keys, targets: Mapping[str, tuple[int, float]], keep_seconds: float) -> list[str]:
    """Stop keeping the targets nobody asked for in ``keep_seconds``; returns their labels."""
    stale = [label for label, (_, read_at) in targets.items() if read_at < time.time() - keep_seconds]
    if stale:
        r.hdel(keys.audiences_wanted, *stale)
    return stale


def store_audience(
    r: redis.Redis, keys: Keys, version: str, label: str, status: Stored, users: list[str], scores: list[float]
) -> None:
    """Replace one target's audience in ``version`` in one MULTI/EXEC: readers see the old one or the new one."""
    pipe = r.pipeline(transaction=True)
    pipe.delete(keys.audience(version, label))
    if users:
        pipe.zadd(keys.audience(version, label), dict(zip(users, scores, strict=True)))
    pipe.hset(keys.audiences(version), label, status.encoded())
    pipe.execute()


def forget_in_audiences(r: redis.Redis, keys: Keys, versions: Iterable[str], users: Iterable[str]) -> int:
    """Remove pseudonyms from every stored audience of ``versions``; returns how many memberships went."""
    names = sorted(users)
    if not names:
        return 0
    pipe = r.pipeline(transaction=False)
    for version in versions:
        for label in r.hkeys(keys.audiences(version)):
            for lo in range(0, len(names), 1000):
                pipe.zrem(keys.audience(version, str(label)), *names[lo : lo + 1000])
    return sum(int(n) for n in pipe.execute())


def mark_checked(r: redis.Redis, keys: Keys, version: str, statuses: Mapping[str, Stored]) -> None:
    """Record that these audiences hold nobody forgotten (the API serves them from now on)."""
    if statuses:
        fields = {label: Stored(**{**s.__dict__, "checked": True}).encoded() for label, s in statuses.items()}
        r.hset(keys.audiences(version), mapping=fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Answer:
    """An audience as the API returns it: ready (users with scores), pending, or failed (``error``)."""

    target: str
    status: str
    """``ready``, ``pending`` or ``failed``."""
    stored: Stored | None = None
    users: list[tuple[str, float]] | None = None


async def ask(r: AsyncRedis, keys: Keys, version: str | None, target: Target, top: int, max_targets: int) -> Answer:
    """Keep ``target`` wanted at ``top`` users at least, and answer from what the job stored for ``version``
    (None: nothing is published yet)."""
    label, now = target.label, time.time()
    pipe = r.pipeline(transaction=False)
    pipe.hget(keys.audiences_wanted, label)
    pipe.hlen(keys.audiences_wanted)
    asked_raw, kept = await pipe.execute()
    asked = _json(asked_raw)
    if asked is not None and not isinstance(asked.get("top"), int):
        asked = None  # unreadable: asked anew
    if asked is None and int(kept) >= max_targets:
        raise TooManyAudiencesError(
            f"{kept} audiences are kept already (RECSYS_AUDIENCE_MAX_TARGETS); one nobody asks for in "
            "RECSYS_AUDIENCE_KEEP_DAYS is dropped"
        )
    bigger = asked is None or top > asked["top"]
    entry = {"top": top, "asked_at": now} if bigger or asked is None else {**asked}
    await r.hset(keys.audiences_wanted, label, orjson.dumps({**entry, "read_at": now}))
    stored = None if version is None else Stored.of(await r.hget(keys.audiences(version), label))
    if version is None or stored is None or not stored.covers(top) or not stored.checked:
        return Answer(label, "pending", stored)
    if stored.error is not None:
        return Answer(label, "failed", stored)
    rows = await r.zrevrange(keys.audience(version, label), 0, top - 1, withscores=True)
    return Answer(label, "ready", stored, [(str(row[0]), float(row[1])) for row in rows])


def _json(value: str | bytes | None) -> dict[str, Any] | None:
    """A stored JSON object (None: absent or unreadable, asked or computed again)."""
    try:
        found = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None
