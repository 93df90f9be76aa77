"""The landing folder: files dropped there are ingested once, then moved aside.

``RECSYS_LANDING_DIR`` (default ``RECSYS_HOME/landing``) takes event files in any format
``recsys ingest`` reads and item catalogs (a CSV whose header has ``item_id`` but no
``user_id``). Catalogs are upserted first, one by one; then every event file is validated and staged
on its own (:func:`stage_landed`: one mapped Airflow task per file, spread over the workers) and all of
them are committed in ONE snapshot (:func:`commit_landed`), so a pass is atomic: nothing of it is
visible before that commit. Then the files move to ``processed/``; a file that cannot be read at all
goes to ``failed/`` with a ``.error`` note beside it. Bad rows inside a readable file are quarantined
as usual.

A crash between the commit and the moves leaves the files in place; the next run ingests them
again and deduplication stores none of them twice (a retried commit task finds its snapshot and
commits nothing again).
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recommender.config import Settings
from recommender.data.ingest import StagedPart, commit_parts, ingest_catalog, stage_file
from recommender.data.readers import FormatError
from recommender.data.store import Store
from recommender.progress import ProgressFn, no_progress

PROCESSED, FAILED = "processed", "failed"
IN_FLIGHT_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".error")


@dataclass
class LandedFile:
    """One file's outcome."""

    file: str
    kind: str  # events | catalog
    moved_to: str
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    items: int = 0
    snapshot_id: int | None = None
    error: str | None = None


@dataclass
class LandingSummary:
    """What one pass over the landing folder did."""

    folder: str
    files: list[LandedFile] = field(default_factory=list)
    ingest: dict[str, object] | None = None
    """The one ingest of the pass's event files (its :class:`IngestSummary`), when there were any."""

    @property
    def stored(self) -> int:
        """Events stored by this pass."""
        return int(self.ingest["stored"]) if self.ingest else 0  # type: ignore[call-overload]

    @property
    def failed(self) -> list[LandedFile]:
        """Files that could not be read."""
        return [f for f in self.files if f.error]

    def to_dict(self) -> dict[str, object]:
        """Plain fields plus totals."""
        return {**asdict(self), "stored": self.stored, "failed": len(self.failed)}

    def to_json(self) -> str:
        """One machine-readable line."""
        return json.dumps(self.to_dict(), sort_keys=True)


def pending_files(folder: Path) -> list[Path]:
    """Files waiting in ``folder`` (not hidden, not still being written), oldest first.

    Symbolic links are listed without being followed: :func:`escapes` tells the ones that lead out.
    """
    if not folder.is_dir():
        return []
    files = [
        p
        for p in folder.iterdir()
        if (p.is_symlink() or p.is_file())
        and not p.name.startswith((".", "_"))
        and not p.name.endswith(IN_FLIGHT_SUFFIXES)
    ]
    return sorted(files, key=lambda p: (p.lstat().st_mtime, p.name))


def escapes(path: Path, folder: Path) -> bool:
    """A symbolic link whose target is not a file inside ``folder`` (never read: it would leak other files)."""
    if not path.is_symlink():
        return False
    target = path.resolve()
    return not (target.is_relative_to(folder.resolve()) and target.is_file())


def is_catalog(path: Path) -> bool:
    """A CSV whose header names ``item_id`` but not ``user_id``."""
    if path.suffix.lower() != ".csv":
        return False
    try:
        with path.open(encoding="utf-8") as fh:
            header = {c.strip().strip('"') for c in fh.readline().split(",")}
    except (OSError, UnicodeDecodeError):
        return False
    return "item_id" in header and "user_id" not in header


def _move(path: Path, folder: Path, tag: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{tag}-{path.name}"
    shutil.move(path, target)
    return target


@dataclass
class LandingPlan:
    """The event files one pass ingests together, and what the pass did already (catalogs, refused files)."""

    ingest_id: str
    files: list[str]
    done: list[LandedFile] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """Plain fields (for an XCom)."""
        return asdict(self)


def plan_landing(settings: Settings, *, store: Store | None = None, ingest_id: str | None = None) -> LandingPlan:
    """Ingest the catalogs waiting in the landing folder (each upserted, then moved) and refuse links that lead
    out of it; returns the event files, oldest first, for :func:`stage_landed` and :func:`commit_landed`."""
    folder = settings.landing
    store = store or Store(settings)
    plan = LandingPlan(ingest_id or uuid.uuid4().hex, [])
    for path in pending_files(folder):
        if escapes(path, folder):
            plan.done.append(_refuse(path, folder, "events", f"{path.name} links outside the landing folder"))
        elif is_catalog(path):
            try:
                items, quarantined = ingest_catalog(path, settings, store=store)
            except FormatError as exc:
                plan.done.append(_refuse(path, folder, "catalog", str(exc)))
                continue
            done = LandedFile(str(path), "catalog", "", items=items, quarantined=quarantined)
            done.moved_to = str(_move(path, folder / PROCESSED, uuid.uuid4().hex[:12]))
            plan.done.append(done)
        else:
            plan.files.append(str(path))
    return plan


def stage_landed(
    settings: Settings, path: str, *, store: Store | None = None, progress: ProgressFn = no_progress
) -> dict[str, object]:
    """Stage one event file of a plan (one mapped task): its :class:`StagedPart`, or, for a file that cannot be
    read at all, its outcome (moved to ``failed/``)."""
    try:
        return stage_file(Path(path), settings, store=store, progress=progress).to_dict()
    except FormatError as exc:
        return asdict(_refuse(Path(path), settings.landing, "events", str(exc)))


def commit_landed(
    settings: Settings, plan: LandingPlan, staged: list[dict[str, Any]], *, store: Store | None = None
) -> LandingSummary:
    """Commit every staged file of a plan in one snapshot, then move the files to ``processed/``."""
    folder = settings.landing
    summary = LandingSummary(folder=str(folder), files=list(plan.done))
    parts = [StagedPart.of(s) for s in staged if "events" in s]
    summary.files += [LandedFile(**s) for s in staged if "events" not in s]
    committed, counts = commit_parts(parts, settings, plan.ingest_id, store=store)
    for part, count in zip(parts, counts, strict=True):
        done = LandedFile(part.source, "events", "", count["stored"], count["duplicates"], count["quarantined"])
        done.snapshot_id = committed.snapshot_id
        if Path(part.source).exists():  # a retried commit: moved by the attempt before
            done.moved_to = str(_move(Path(part.source), folder / PROCESSED, plan.ingest_id[:12]))
        summary.files.append(done)
    summary.ingest = committed.to_dict() if parts else None
    return summary


def ingest_landing(
    settings: Settings, *, store: Store | None = None, progress: ProgressFn = no_progress
) -> LandingSummary:
    """Ingest every file waiting in the landing folder: catalogs one by one, the event files together in one
    snapshot (what the ``ingest_interactions`` DAG does with one mapped task per file)."""
    store = store or Store(settings)
    plan = plan_landing(settings, store=store)
    staged = [stage_landed(settings, path, store=store, progress=progress) for path in plan.files]
    return commit_landed(settings, plan, staged, store=store)


def _refuse(path: Path, folder: Path, kind: str, error: str) -> LandedFile:
    """Move an unreadable (or refused) file to ``failed/`` with a ``.error`` note beside it."""
    failed = _move(path, folder / FAILED, uuid.uuid4().hex[:12])
    failed.with_name(failed.name + ".error").write_text(f"{error}\n", encoding="utf-8")
    return LandedFile(str(path), kind, str(failed), error=error)
