"""Small shops built once per test process and restored, in place, before each use.

Ingesting, training and publishing the small shop takes a few seconds, a sequential model more;
dozens of tests need one. A :class:`Shop` builds its state once (a ``RECSYS_HOME`` and a Redis
database), keeps a pristine copy of both, and :meth:`Shop.restore` brings them back to it before
a test (or a module) that may change them: nothing a test writes reaches the next one.

Restoring happens in place, at the same paths: the Iceberg tables and the MLflow runs name their
files by absolute path, and MLflow keeps one SQLAlchemy engine per tracking URI for the life of
the process, so a home rebuilt at a new path (or a SQLite file replaced under an open engine)
would not be read back. SQLite files are written through SQLite's backup API, which the engines'
pooled connections see on their next transaction; every other file is immutable once written
(data files, metadata, artifacts) and is copied back or removed.
"""

from __future__ import annotations

import filecmp
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import redis

from recommender.config import Settings
from recommender.data.ingest import ingest_file
from recommender.data.synthetic import ShopSpec, generate, write_shop
from recommender.modeling.training import TrainConfig
from recommender.registry.lifecycle import publish_model, train_and_register
from recommender.registry.promotion import promote
from recommender.registry.tracking import experiment_id
from tests.conftest import SMALL_SHOP_ARGS

ALS = TrainConfig(family="als", params={"factors": 16, "iterations": 5})
SEQUENTIAL = TrainConfig(
    family="sequential", params={"hidden": 32, "blocks": 1, "inner": 64, "epochs": 30, "batch_rows": 16}
)
SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_SIDECARS = ("-journal", "-wal", "-shm")


def ingest_small_shop(settings: Settings) -> None:
    """Write the small synthetic shop next to ``settings``' home and ingest it with its catalog."""
    events, catalog = write_shop(generate(ShopSpec(**SMALL_SHOP_ARGS)), settings.home_abs.parent / "shop")
    ingest_file(events, settings, catalog=catalog)


def publish_small_shop(settings: Settings, config: TrainConfig = ALS) -> None:
    """Ingest the small shop, train (``config``), promote and publish it."""
    ingest_small_shop(settings)
    out = train_and_register(settings, config)
    promote(settings, "production", out.model_version)
    publish_model(settings)


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def _backup(source: Path, target: Path) -> None:
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def sync_tree(source: Path, target: Path) -> None:
    """Make ``target`` hold exactly what ``source`` holds, writing SQLite files through the backup API."""
    target.mkdir(parents=True, exist_ok=True)
    wanted: set[Path] = set()
    for path in sorted(source.rglob("*")):
        if path.name.endswith(SQLITE_SIDECARS):
            continue
        relative = path.relative_to(source)
        wanted.add(relative)
        copy = target / relative
        if path.is_dir():
            copy.mkdir(exist_ok=True)
        elif _is_sqlite(path):
            _backup(path, copy)
        elif not copy.is_file() or not filecmp.cmp(path, copy, shallow=True):
            shutil.copy2(path, copy)
    for path in sorted(target.rglob("*"), reverse=True):  # deepest first
        relative = path.relative_to(target)
        if relative in wanted or path.name.endswith(SQLITE_SIDECARS):
            continue
        if path.is_file() and _is_sqlite(path):
            raise AssertionError(f"{relative} did not exist when the shop was built: create it in the build")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def copy_database(url: str, source_db: int, target_db: int) -> int:
    """Empty database ``target_db`` of the server at ``url`` and copy every key of ``source_db`` into it."""
    base = url.rsplit("/", 1)[0]
    source = redis.Redis.from_url(f"{base}/{source_db}")
    target = redis.Redis.from_url(f"{base}/{target_db}")
    try:
        target.flushdb()
        pipe = source.pipeline(transaction=False)
        keys = list(source.scan_iter(count=1000))
        for key in keys:
            pipe.copy(key, key, destination_db=target_db)
        pipe.execute()
        return len(keys)
    finally:
        source.close()
        target.close()


class Shop:
    """A shop's state (home and Redis database), built by ``build`` on first use and restored after."""

    def __init__(self, settings: Settings, pristine_db: int, build: Callable[[Settings], None]) -> None:
        self.settings, self.pristine_db, self._build = settings, pristine_db, build
        self.home = settings.home_abs
        self.pristine = self.home.with_name(self.home.name + ".pristine")
        self.built = False

    @property
    def db(self) -> int:
        return int(str(self.settings.redis_url).rsplit("/", 1)[1])

    def restore(self) -> Settings:
        """The shop as it was built (built now, the first time); returns its settings."""
        url = str(self.settings.redis_url)
        if not self.built:
            redis.Redis.from_url(url).flushdb()
            self._build(self.settings)
            experiment_id(self.settings)  # the tracking database exists before any test opens it
            sync_tree(self.home, self.pristine)
            copy_database(url, self.db, self.pristine_db)
            self.built = True
        else:
            sync_tree(self.pristine, self.home)
            copy_database(url, self.pristine_db, self.db)
        return self.settings
