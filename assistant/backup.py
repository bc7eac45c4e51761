"""Workspace backup to one archive.

The database is copied with SQLite's online backup API, which yields a consistent snapshot
even while the app or a training job keeps writing (copying tailor.db, -wal and -shm by hand
can capture a torn state). Every other file in the workspace goes in as it is; the converted
model cache (`models/`) is left out unless asked for, because it is rebuilt from the model
setting on the next start and is by far the biggest folder.

    archive.tar.gz
      tailor.db                 the snapshot (journal mode DELETE: one self-contained file)
      adapters/ indexes/ jobs/ exports/ uploads/ ...
      tailor-backup.json        manifest: format, tables and row counts, every file's size and sha256

Restoring is assistant/restore.py."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .db import utcnow
from .errors import ValidationError, write_failed
from .workspace import Workspace

FORMAT = 1
MANIFEST = "tailor-backup.json"
DB_NAME = "tailor.db"
DB_FILES = {DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal"}
Progress = Callable[[str], None]


@dataclass
class BackupResult:
    path: Path
    files: int
    bytes: int
    tables: dict[str, int]
    seconds: float
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        rows = sum(self.tables.values())
        return (
            f"Backed up {self.files} files and {rows} database rows in {len(self.tables)} tables to {self.path} "
            f"({self.bytes / 1e6:.1f} MB, {self.seconds:.1f} s)"
        )


def table_counts(conn: sqlite3.Connection) -> dict[str, int]:
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    return {n: conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _workspace_files(root: Path, include_models: bool, exclude: set[Path]) -> tuple[list[Path], list[str]]:
    files, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel_dir = here.relative_to(root)
        # Dot-names are in-progress temporaries (publish_dir, write_atomic) and lock files.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if rel_dir == Path(".") and not include_models and "models" in dirnames:
            dirnames.remove("models")
            skipped.append("models/ (model cache; rebuilt on the next start; --include-models keeps it)")
        if rel_dir == Path(".") and "tmp" in dirnames:  # the web app's upload and download copies
            dirnames.remove("tmp")
            skipped.append("tmp/ (copies of web uploads and downloads)")
        for name in sorted(filenames):
            path = here / name
            rel = path.relative_to(root)
            if name.startswith(".") or (rel_dir == Path(".") and (name in DB_FILES or name == MANIFEST)):
                continue
            if path.resolve() in exclude:
                continue
            if path.is_symlink():
                skipped.append(f"{rel.as_posix()} (a link, not a file)")
                continue
            files.append(path)
        for d in list(dirnames):
            if (here / d).is_symlink():
                skipped.append(f"{(rel_dir / d).as_posix()}/ (a link, not a folder)")
                dirnames.remove(d)
    return files, skipped


class _HashingReader(io.RawIOBase):
    """Reads exactly `size` bytes of a file while hashing them, so the manifest describes the
    bytes that went into the archive even if the file changes afterwards (a job log)."""

    def __init__(self, fh, size: int):
        self.fh, self.left, self.sha = fh, size, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.fh.read(n)
        if len(data) < n:  # the file shrank while we read it: pad, the manifest records the real bytes
            data += b"\0" * (n - len(data))
        self.left -= len(data)
        self.sha.update(data)
        return data


def _open_for_write(path: Path) -> tuple[str, dict]:
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return "w:gz", {"compresslevel": 1}  # weights hardly compress; favour speed
    if name.endswith(".tar"):
        return "w", {}
    raise ValidationError(f"{path.name}: a backup must be a .tar.gz, .tgz or .tar file")


def backup_workspace(
    workspace: Workspace,
    dest: Path | str,
    *,
    include_models: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> BackupResult:
    started = time.perf_counter()
    say = progress or (lambda _m: None)
    dest = Path(dest).expanduser().resolve()
    mode, kwargs = _open_for_write(dest)
    if dest.exists() and not overwrite:
        raise ValidationError(f"{dest} already exists; choose another name")
    try:
        return _backup(workspace, dest, mode, kwargs, include_models, say, started)
    except OSError as exc:
        # A full or read-only destination (the snapshot and the archive are written there).
        # _backup has removed its staging folder; say so in words instead of a traceback.
        raise write_failed(dest, exc) from exc
    except sqlite3.OperationalError as exc:
        if "full" not in str(exc) and "readonly" not in str(exc):
            raise  # not about the destination (e.g. the live database stayed locked)
        raise write_failed(dest, exc) from exc


def _backup(
    workspace: Workspace, dest: Path, mode: str, kwargs: dict, include_models: bool, say: Progress, started: float
) -> BackupResult:
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".tailor-backup-", dir=dest.parent))
    tmp_archive = stage / "archive"
    try:
        say("Snapshotting the database (SQLite online backup)...")
        snapshot = stage / DB_NAME
        src = sqlite3.connect(workspace.db.path, timeout=30)
        dst = sqlite3.connect(snapshot)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file in the archive
            tables = table_counts(dst)
            migrations: dict[str, list[str]] = {}
            if "migrations" in tables:
                for ns, name in dst.execute("SELECT namespace, name FROM migrations ORDER BY namespace, version"):
                    migrations.setdefault(ns, []).append(name)
        finally:
            dst.close()
            src.close()
        files, skipped = _workspace_files(workspace.root, include_models, {dest, tmp_archive})
        entries: list[dict] = []
        say(f"Archiving {len(files)} files...")
        with tarfile.open(tmp_archive, mode, **kwargs) as tar:  # type: ignore[call-overload]  # mode is a str here
            db_entry: dict = {"path": DB_NAME, "size": snapshot.stat().st_size, "sha256": _sha256(snapshot)}
            tar.add(snapshot, DB_NAME, recursive=False)
            for path in files:
                rel = path.relative_to(workspace.root).as_posix()
                try:
                    size = path.stat().st_size
                    info = tar.gettarinfo(path, rel)
                    info.size = size
                    with open(path, "rb") as fh:
                        reader = _HashingReader(fh, size)
                        tar.addfile(info, reader)
                except FileNotFoundError:  # deleted while we walked (a finished job's temp file)
                    skipped.append(f"{rel} (vanished during the backup)")
                    continue
                entries.append({"path": rel, "size": size, "sha256": reader.sha.hexdigest()})
            manifest = {
                "format": FORMAT,
                "created_at": utcnow(),
                "source": str(workspace.root),
                "include_models": include_models,
                "database": {**db_entry, "tables": tables, "migrations": migrations},
                "files": entries,
                "skipped": skipped,
            }
            data = json.dumps(manifest, indent=2, ensure_ascii=False).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
        os.replace(tmp_archive, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    total = sum(int(e["size"]) for e in entries) + int(db_entry["size"])
    result = BackupResult(dest, len(entries) + 1, total, tables, time.perf_counter() - started, skipped)
    say(result.summary())
    return result
