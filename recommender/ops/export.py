"""Bulk export of the served recommendations: every user's top-N of a placement, for email, push and the warehouse.

``export_recommendations`` reads the active version's user lists from Redis, :data:`USERS_PER_ROUND` users at
a time, and arranges each one as the API serves it (:meth:`RecommendationService.bulk`: the placement's rules,
availability and diversity, with reasons; no challenger, exploration or paging). The rows go to:

* the Iceberg table ``recommendations`` (:data:`~recommender.data.store.RECOMMENDATION_SCHEMA`): staged as
  Parquet files while the users stream past, then committed in one snapshot that also deletes any earlier
  export of the same model version and placement, so a retry after a crash (nothing committed) or a forced
  re-export replaces, never doubles;
* or Parquet/CSV files under a path (local or ``s3://``, through pyarrow's file systems):
  ``{path}/version={v}/placement={p}/part-00000.parquet`` and so on, with ``_SUCCESS`` written last; a retry
  deletes the parts of an export that has no ``_SUCCESS``.

An export is incremental per version: one already done for the served model version and placement is skipped
(``force`` redoes it). Memory is bounded by a round of users and one file's rows, whatever the user count.
Forgotten users are never exported: their lists leave Redis when forgetting starts, and the tombstoned
pseudonyms are skipped as well; forgetting deletes their rows from the table (:meth:`Store.delete_user`).
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import orjson
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyiceberg.table import Table

from recommender.config import Settings
from recommender.data.store import AUDIENCE_SCHEMA, PROP_PREFIX, RECOMMENDATION_SCHEMA, StagedFiles, Store, retrying
from recommender.online.keys import Keys
from recommender.online.redis_conn import async_client, redis_url
from recommender.online.service import RecommendationService
from recommender.online.versions import Item
from recommender.progress import ProgressFn, no_progress
from recommender.registry.audience import Audience

USERS_PER_ROUND = 1_000
FILE_ROWS = 500_000
CONNECTIONS = 16
"""Redis connections of an export (a round's users wait for one in turn)."""
BATCH_TIMEOUT_SECONDS = 30.0
EXPORTED = f"{PROP_PREFIX}export"
"""Snapshot property naming what an export commit holds: ``{model version}:{placement}``."""
Format = Literal["parquet", "csv"]


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

    def done(self) -> bool:
        return self.fs.get_file_info(f"{self.folder}/_SUCCESS").type == pafs.FileType.File

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
        path = f"{self.folder}/part-{self.parts:05d}.{self.fmt}"
        with self.fs.open_output_stream(path) as out:
            if self.fmt == "parquet":
                pq.write_table(rows, out)
            else:
                pcsv.write_csv(rows, out)
        self.parts += 1

    def finish(self, summary: dict[str, Any]) -> None:
        self.flush()
        with self.fs.open_output_stream(f"{self.folder}/_SUCCESS") as out:
            out.write(orjson.dumps(summary))


def _already_in_table(store: Store, model_version: str, placement: str) -> bool:
    table = store.recommendations()
    return any(
        s.summary is not None and s.summary.get(EXPORTED) == f"{model_version}:{placement}" for s in table.snapshots()
    )


def _replace(load: Callable[[], Table], where: str, properties: dict[str, str], add: Callable[[Any], None]) -> None:
    """In one snapshot of the table ``load`` gives: delete the rows ``where`` selects, then ``add(transaction)``."""

    def commit() -> None:
        with load().transaction() as tx, warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Delete operation did not match any records")  # a first export
            tx.delete(where)
            add(tx)

    retrying(commit)


def _commit(store: Store, staged: StagedFiles, model_version: str, placement: str, rows: int) -> None:
    """Replace the table's rows of ``model_version`` and ``placement`` by the staged files, in one snapshot."""
    staged.flush()
    properties = {EXPORTED: f"{model_version}:{placement}", f"{PROP_PREFIX}export_rows": str(rows)}

    def add(tx: Any) -> None:
        if staged.files:
            tx.add_files(staged.files, snapshot_properties=properties, check_duplicate_files=False)

    where = f"version == '{model_version}' AND placement == '{placement}'"  # both are plain names
    _replace(store.recommendations, where, properties, add)


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
    target = found.target.replace("'", "''")  # any item id: quoted as SQL quotes
    _replace(
        store.audiences,
        f"target == '{target}' AND version == '{found.model_version}'",
        {},
        lambda tx: tx.append(rows),
    )
    return {"target": f"{settings.namespace}.audiences", "rows": rows.num_rows}


async def _rounds(
    settings: Settings, url: str, placement: str, n: int, forgotten: set[str], progress: ProgressFn
) -> tuple[str, Any]:
    """The served model version and an async generator of (users, lists) rounds."""
    batch_settings = settings.model_copy(update={"redis_timeout": BATCH_TIMEOUT_SECONDS})  # a job, not a page
    redis = async_client(batch_settings, url, max_connections=CONNECTIONS)
    service = RecommendationService(redis, batch_settings)
    await service.reload_live()
    keys = Keys(settings.redis_prefix)
    version = await redis.get(keys.active)
    if version is None:
        await redis.aclose()
        raise ExportError("nothing is published: run `recsys publish` (or the retrain DAG) first")
    model_version, _ = await service.bulk(placement, [], n)  # checks the placement ranks for users

    async def rounds() -> Any:
        done = 0
        try:
            users = redis.scan_iter(match=keys.ns(str(version)) + "user:*", count=USERS_PER_ROUND)
            batch: list[str] = []
            async for key in users:
                user = keys.user_of(str(key))
                if user not in forgotten:
                    batch.append(user)
                if len(batch) == USERS_PER_ROUND:
                    yield batch, (await service.bulk(placement, batch, n))[1]
                    done += len(batch)
                    progress("users exported", done, None)
                    batch = []
            if batch:
                yield batch, (await service.bulk(placement, batch, n))[1]
                progress("users exported", done + len(batch), None)
        finally:
            await redis.aclose()

    return str(model_version), rounds()


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
    store = Store(settings)
    forgotten = {str(u) for u in store.forgotten_users().to_pylist()}
    with redis_url(settings) as url:
        return asyncio.run(_export(settings, url, job, store, forgotten, progress))


async def _export(
    settings: Settings, url: str, job: Job, store: Store, forgotten: set[str], progress: ProgressFn
) -> dict[str, Any]:
    clock, at = time.monotonic(), datetime.now(UTC)
    model_version, rounds = await _rounds(settings, url, job.placement, job.n, forgotten, progress)
    files = _Files(job.to, f"version={model_version}/placement={job.placement}", job.fmt) if job.to else None
    target = files.uri if files else f"{settings.namespace}.recommendations"

    def result(users: int, rows: int, skipped: str | None = None) -> dict[str, Any]:
        seconds = round(time.monotonic() - clock, 3)
        return asdict(Exported(job.placement, model_version, users, rows, target, skipped, seconds))

    already = files.done() if files else _already_in_table(store, model_version, job.placement)
    if already and not job.force:
        await rounds.aclose()
        return result(
            0, 0, f"model version {model_version} of {job.placement!r} is exported already (--force redoes it)"
        )
    sink: _Files | StagedFiles = files or StagedFiles(
        store.recommendations(), RECOMMENDATION_SCHEMA, file_rows=FILE_ROWS
    )
    if files:
        files.start()
    users = rows = 0
    try:
        async for batch, lists in rounds:
            table = rows_of(batch, lists, model_version, job.placement, at)
            users, rows = users + len(batch), rows + table.num_rows
            sink.write(table)
    except BaseException:
        if isinstance(sink, StagedFiles):
            sink.discard()
        raise
    summary = result(users, rows)
    if isinstance(sink, StagedFiles):
        _commit(store, sink, model_version, job.placement, rows)
    else:
        sink.finish(summary)
    return summary
