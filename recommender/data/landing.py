"""The landing folder: files dropped there are ingested once, then moved aside.

``RECSYS_LANDING_DIR`` (default ``RECSYS_HOME/landing``) takes event files in any format
``recsys ingest`` reads and item catalogs (a CSV whose header has ``item_id`` but no
``user_id``). Each file becomes one ingest (catalogs first, then events, oldest first) and is
then moved to ``processed/``; a file that cannot be read at all goes to ``failed/`` with a
``.error`` note beside it. Bad rows inside a readable file are quarantined as usual.

A crash between an ingest's commit and the move leaves the file in place; the next run
ingests it again and deduplication stores none of it twice.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from recommender.config import Settings
from recommender.data.ingest import ingest_catalog, ingest_file
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

    @property
    def stored(self) -> int:
        """Events stored by this pass."""
        return sum(f.stored for f in self.files)

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


def ingest_landing(
    settings: Settings, *, store: Store | None = None, progress: ProgressFn = no_progress
) -> LandingSummary:
    """Ingest every file waiting in the landing folder, each as its own snapshot."""
    folder = settings.landing
    store = store or Store(settings)
    summary = LandingSummary(folder=str(folder))
    waiting = pending_files(folder)
    kinds = {path: "catalog" if is_catalog(path) else "events" for path in waiting if not escapes(path, folder)}
    for path in waiting:
        if path not in kinds:
            summary.files.append(_refuse(path, folder, "events", f"{path.name} links outside the landing folder"))
    for path, kind in sorted(kinds.items(), key=lambda pk: pk[1] != "catalog"):  # stable: catalogs first, by age
        try:
            if kind == "catalog":
                items, quarantined = ingest_catalog(path, settings, store=store)
                done = LandedFile(str(path), kind, "", items=items, quarantined=quarantined)
                tag = uuid.uuid4().hex[:12]
            else:
                ingested = ingest_file(path, settings, store=store, progress=progress)
                done = LandedFile(
                    str(path),
                    kind,
                    "",
                    stored=ingested.stored,
                    duplicates=ingested.duplicates,
                    quarantined=ingested.quarantined,
                    snapshot_id=ingested.snapshot_id,
                )
                tag = ingested.ingest_id[:12]
            done.moved_to = str(_move(path, folder / PROCESSED, tag))
        except FormatError as exc:
            done = _refuse(path, folder, kind, str(exc))
        summary.files.append(done)
    return summary


def _refuse(path: Path, folder: Path, kind: str, error: str) -> LandedFile:
    """Move an unreadable (or refused) file to ``failed/`` with a ``.error`` note beside it."""
    failed = _move(path, folder / FAILED, uuid.uuid4().hex[:12])
    failed.with_name(failed.name + ".error").write_text(f"{error}\n", encoding="utf-8")
    return LandedFile(str(path), kind, str(failed), error=error)
