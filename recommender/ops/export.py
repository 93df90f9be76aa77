"""Bulk export of the served recommendations: every user's top-N of a placement, for email, push and the warehouse.

``export_recommendations`` pins the active version, reads its user lists from Redis, :data:`USERS_PER_ROUND`
users at a time (each user once, whatever SCAN repeats), and arranges each one as the API serves it
(:meth:`RecommendationService.bulk`: the placement's rules, availability and diversity, with reasons; no
challenger, exploration or paging). The rows go to:

* the Iceberg table ``recommendations`` (:data:`~recommender.data.store.RECOMMENDATION_SCHEMA`): staged as
  Parquet files while the users stream past, then committed at once with the deletion of the placement's earlier
  rows (one commit: the table holds the newest export of each placement), so a retry after a crash (nothing
  committed) or a forced re-export replaces, never doubles;
* or Parquet/CSV files under a path (local or ``s3://``, through pyarrow's file systems):
  ``{path}/version={v}/placement={p}/part-00000.parquet`` and so on, with ``_SUCCESS`` written last; a retry
  deletes the parts of an export that has no ``_SUCCESS``.

An export is incremental per version: one already done for the served model version, placement and size is
skipped (``force`` redoes it; the table keeps what it holds in its properties, the files in ``_SUCCESS``).
Memory is bounded by a round of users, one file's rows and the set of users seen (a pseudonym each).
Forgotten users are never exported: those tombstoned or queued for forgetting when the export starts are
skipped, and those queued while it runs are dropped from what it wrote before it commits; forgetting deletes
their rows from the table afterwards (:meth:`Store.delete_user`). A version removed while the export ran (two
publishes meanwhile) fails it, with nothing committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyiceberg.expressions import And, BooleanExpression, EqualTo
from pyiceberg.table import Table
from redis.exceptions import RedisError

from recommender.config import Settings
from recommender.data.store import AUDIENCE_SCHEMA, PROP_PREFIX, RECOMMENDATION_SCHEMA, StagedFiles, Store, retrying
from recommender.online.keys import Keys
from recommender.online.redis_conn import async_client, connect, redis_url
from recommender.online.service import RecommendationService
from recommender.online.versions import Item
from recommender.progress import ProgressFn, no_progress
from recommender.registry.audience import Audience
from recommender.registry.publish import forgotten

USERS_PER_ROUND = 1_000
FILE_ROWS = 500_000
CONNECTIONS = 16
"""Redis connections of an export (a round's users wait for one in turn)."""
BATCH_TIMEOUT_SECONDS = 30.0
EXPORTED = f"{PROP_PREFIX}export"
"""Snapshot property naming what an export commit holds (``{model version}:{placement}``); the table property
``{EXPORTED}.{placement}`` says which model version and size the table holds (``{model version}:{n}``)."""
Format = Literal["parquet", "csv"]
AS_WRITTEN = pcsv.ConvertOptions(column_types={field.name: field.type for field in RECOMMENDATION_SCHEMA})
"""A CSV part read back with the types it was written with (a pseudonym of digits alone stays text)."""


class ExportError(RuntimeError):
    """Nothing to export (no published version), or a placement that does not rank for users."""


@dataclass(frozen=True)
class Exported:
    """What one export did."""

    placement: str
    model_version: str
    users: int
    rows: int
    target: str
    skipped: str | None
    seconds: float


def rows_of(users: list[str], lists: list[list[Item]], model_version: str, placement: str, at: datetime) -> pa.Table:
    """The export rows of one round: one per user and item, ranked from 1."""
    counts = [len(items) for items in lists]
    flat = [item for items in lists for item in items]
    count = len(flat)
    columns = {
        "user_id": [user for user, k in zip(users, counts, strict=True) for _ in range(k)],
        "item_id": [item["item_id"] for item in flat],
        "rank": [rank for k in counts for rank in range(1, k + 1)],
        "score": [item.get("score") for item in flat],
        "reason": [orjson.dumps(item["reason"]).decode() if item.get("reason") else None for item in flat],
        "version": [model_version] * count,
        "placement": [placement] * count,
        "exported_at": [at] * count,
    }
    return pa.table(columns, schema=RECOMMENDATION_SCHEMA)


class _Files:
    """Parts under ``{path}/{folder}/`` (e.g. ``version={v}/placement={p}``), ``_SUCCESS`` last."""

    def __init__(self, path: str, folder: str, fmt: Format) -> None:
        self.fs, root = pafs.FileSystem.from_uri(path)
        self.folder = f"{root.rstrip('/')}/{folder}"
        self.uri = f"{path.rstrip('/')}/{folder}"
        self.fmt, self.parts = fmt, 0
        self._pending: list[pa.Table] = []

    def done(self) -> str | None:
        """``{model version}:{n}`` of the finished export in the folder, if any."""
        if self.fs.get_file_info(f"{self.folder}/_SUCCESS").type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(f"{self.folder}/_SUCCESS") as f:
            summary = orjson.loads(f.read())
        return f"{summary.get('model_version')}:{summary.get('n')}"

    def start(self) -> None:
        """Remove what an earlier, unfinished or forced, export left."""
        if self.fs.get_file_info(self.folder).type == pafs.FileType.Directory:
            self.fs.delete_dir_contents(self.folder)
        self.fs.create_dir(self.folder, recursive=True)

    def write(self, rows: pa.Table) -> None:
        self._pending.append(rows)
        if sum(t.num_rows for t in self._pending) >= FILE_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        rows, self._pending = pa.concat_tables(self._pending), []
        self._write(rows, f"{self.folder}/part-{self.parts:05d}.{self.fmt}")
        self.parts += 1

    def drop(self, remove: Callable[[pa.Table], Any]) -> int:
        """Rewrite the parts without the rows ``remove`` marks; returns how many were dropped."""
        self.flush()
        dropped = 0
        for k in range(self.parts):
            path = f"{self.folder}/part-{k:05d}.{self.fmt}"
            with self.fs.open_input_file(path) as f:
                rows = pq.read_table(f) if self.fmt == "parquet" else pcsv.read_csv(f, convert_options=AS_WRITTEN)
            mask = remove(rows)
            if mask.any():
                dropped += int(mask.sum())
                self._write(rows.filter(pa.array(~mask)), path)
        return dropped

    def _write(self, rows: pa.Table, path: str) -> None:
        with self.fs.open_output_stream(path) as out:
            if self.fmt == "parquet":
                pq.write_table(rows, out)
            else:
                pcsv.write_csv(rows, out)

    def finish(self, summary: dict[str, Any]) -> None:
        self.flush()
        with self.fs.open_output_stream(f"{self.folder}/_SUCCESS") as out:
            out.write(orjson.dumps(summary))


def _public(uri: str) -> str:
    """``uri`` without any credentials in it (``s3://key:secret@bucket/...``)."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(netloc=parts.hostname or "")) if parts.username or parts.password else uri


def _eq(name: str, value: str) -> BooleanExpression:
    return EqualTo(name, value)  # type: ignore[call-arg,arg-type]  # not a parsed string: any text is safe


def _replace(load: Callable[[], Table], where: BooleanExpression, add: Callable[[Any], None]) -> None:
    """In one commit to the table ``load`` gives: delete the rows ``where`` selects, then ``add(transaction)``."""

    def commit() -> None:
        with load().transaction() as tx, warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Delete operation did not match any records")  # a first export
            tx.delete(where)
            add(tx)

    retrying(commit)


def _done_key(placement: str) -> str:
    return f"{EXPORTED}.{placement}"


def _commit(
    store: Store, staged: StagedFiles, model_version: str, placement: str, n: int, before: Callable[[], None]
) -> None:
    """Replace the placement's rows in the table by the staged files, and note what the table now holds; ``before``
    runs ahead of each attempt (a retried commit checks its rows again)."""

    def add(tx: Any) -> None:
        before()
        staged.flush()
        if staged.files:
            properties = {EXPORTED: f"{model_version}:{placement}"}
            tx.add_files(staged.files, snapshot_properties=properties, check_duplicate_files=False)
        tx.set_properties({_done_key(placement): f"{model_version}:{n}"})

    _replace(store.recommendations, _eq("placement", placement), add)


def export_audience(
    settings: Settings, found: Audience, to: str | None = None, fmt: Format = "parquet"
) -> dict[str, Any]:
    """Write an audience to the Iceberg table ``audiences`` (replacing the same target's rows of the same model
    version) or to a file under ``to``: ``audience={target}/version={v}/part-00000.{fmt}``."""
    at = datetime.now(UTC)
    rows = pa.table(
        {
            "user_id": found.users,
            "rank": list(range(1, len(found.users) + 1)),
            "score": found.scores,
            "target": [found.target] * len(found.users),
            "version": [found.model_version] * len(found.users),
            "exported_at": [at] * len(found.users),
        },
        schema=AUDIENCE_SCHEMA,
    )
    if to:
        files = _Files(to, f"audience={quote(found.target, safe='')}/version={found.model_version}", fmt)
        files.start()
        files.write(rows)
        files.finish({"target": found.target, "rows": rows.num_rows})
        return {"target": files.uri, "rows": rows.num_rows}
    store = Store(settings)
    where = And(_eq("target", found.target), _eq("version", found.model_version))
    _replace(store.audiences, where, lambda tx: tx.append(rows))
    return {"target": f"{settings.namespace}.audiences", "rows": rows.num_rows}


@dataclass(frozen=True)
class Job:
    """What to export, and where."""

    placement: str
    n: int
    to: str | None
    fmt: Format
    force: bool


def export_recommendations(
    settings: Settings,
    placement: str = "home",
    n: int | None = None,
    to: str | None = None,
    fmt: Format = "parquet",
    force: bool = False,
    progress: ProgressFn = no_progress,
) -> dict[str, Any]:
    """Export every user's top ``n`` (``RECSYS_EXPORT_N``) of ``placement`` from the served version to the
    ``recommendations`` table, or to files under ``to`` (a path or ``s3://`` URI) in ``fmt``."""
    job = Job(placement, n or settings.export_n, to, fmt, force)
    with redis_url(settings) as url, connect(settings) as r:
        return asyncio.run(
            _export(
                settings,
                url,
                job,
                Store(settings),
                lambda: forgotten(r, Keys(settings.redis_prefix), settings),
                progress,
            )
        )


async def _export(
    settings: Settings,
    url: str,
    job: Job,
    store: Store,
    gone: Callable[[], frozenset[str]],
    progress: ProgressFn,
) -> dict[str, Any]:
    clock, at = time.monotonic(), datetime.now(UTC)
    keys = Keys(settings.redis_prefix)
    batch_settings = settings.model_copy(update={"redis_timeout": BATCH_TIMEOUT_SECONDS})  # a job, not a page
    redis = async_client(batch_settings, url, max_connections=CONNECTIONS)
    try:
        service = RecommendationService(redis, batch_settings)
        await service.reload_live()
        version = await redis.get(keys.active)
        if version is None:
            raise ExportError("nothing is published: run `recsys publish` (or the retrain DAG) first")
        version = str(version)
        model_version, _ = await service.bulk(job.placement, [], job.n, version)  # the placement ranks for users
        files = _Files(job.to, f"version={model_version}/placement={job.placement}", job.fmt) if job.to else None
        target = files.uri if files else f"{settings.namespace}.recommendations"

        def result(users: int, rows: int, skipped: str | None = None) -> dict[str, Any]:
            seconds = round(time.monotonic() - clock, 3)
            return asdict(Exported(job.placement, str(model_version), users, rows, target, skipped, seconds))

        held = files.done() if files else store.recommendations().properties.get(_done_key(job.placement))
        if held == f"{model_version}:{job.n}" and not job.force:
            return result(0, 0, f"model version {model_version} of {job.placement!r} is exported already (--force)")
        sink: _Files | StagedFiles = files or StagedFiles(
            store.recommendations(), RECOMMENDATION_SCHEMA, file_rows=FILE_ROWS
        )
        if files:
            files.start()
        try:
            seen, rows = await _stream(service, redis, keys, version, job, gone(), sink, at, progress)
            if not await redis.exists(keys.meta(version)):
                raise ExportError(f"version {version} was removed while it was exported (two publishes): run again")
            dropped: set[str] = set()

            def drop_late() -> None:  # queued for forgetting while the export ran: out before anything is committed
                nonlocal rows
                late = (gone() & seen) - dropped
                if late:
                    rows -= sink.drop(lambda t: pc.is_in(t.column("user_id"), pa.array(sorted(late))).to_numpy(False))
                    dropped.update(late)

            if isinstance(sink, StagedFiles):
                _commit(store, sink, str(model_version), job.placement, job.n, drop_late)
            else:
                drop_late()
                sink.finish({**result(len(seen - dropped), rows), "n": job.n})
            users = len(seen - dropped)
        except BaseException:
            if isinstance(sink, StagedFiles):
                sink.discard()
            raise
        summary = result(users, rows)
        with contextlib.suppress(RedisError, OSError):  # committed already: the console's note is best-effort
            await redis.hset(keys.exports, job.placement, orjson.dumps({**summary, "target": _public(target)}).decode())
        return summary
    finally:
        await redis.aclose()


async def _stream(
    service: RecommendationService,
    redis: Any,
    keys: Keys,
    version: str,
    job: Job,
    skip: frozenset[str],
    sink: _Files | StagedFiles,
    at: datetime,
    progress: ProgressFn,
) -> tuple[set[str], int]:
    """Arrange and write every user of ``version`` once (SCAN may repeat a key); returns the users and rows."""
    seen: set[str] = set()
    rows = 0
    batch: list[str] = []

    async def write() -> None:
        nonlocal rows
        model_version, lists = await service.bulk(job.placement, batch, job.n, version)
        table = rows_of(batch, lists, str(model_version), job.placement, at)
        rows += table.num_rows
        sink.write(table)
        progress("users exported", len(seen), None)
        batch.clear()

    async for key in redis.scan_iter(match=keys.ns(version) + "user:*", count=USERS_PER_ROUND):
        user = keys.user_of(str(key))
        if user in seen or user in skip:
            continue
        seen.add(user)
        batch.append(user)
        if len(batch) == USERS_PER_ROUND:
            await write()
    if batch:
        await write()
    return seen, rows
