"""Workspace backup to one archive, and restore into an empty workspace.

The database is copied with SQLite's online backup API, which yields a consistent snapshot
even while the app or a training job keeps writing (copying tailor.db, -wal and -shm by hand
can capture a torn state). Every other file in the workspace goes in as it is; the converted
model cache (`models/`) is left out unless asked for, because it is rebuilt from the model
setting on the next start and is by far the biggest folder.

    archive.tar.gz
      tailor.db                 the snapshot (journal mode DELETE: one self-contained file)
      adapters/ indexes/ jobs/ exports/ uploads/ ...
      tailor-backup.json        manifest: format, tables and row counts, every file's size and sha256

Restore refuses a workspace that holds anything (so it can never overwrite work). Before it
writes a byte it checks the manifest's shape, every archive member against the manifest
(only plain files it lists, each with the size it declares, nothing twice), the total against
a sane compression ratio and against the free space where it unpacks. Then it unpacks those
members into a temporary folder beside the target with tarfile's "data" filter (no absolute
paths, no `..`, no links or devices), checks every file's sha256 and the database with
`PRAGMA integrity_check`, and only then renames the folder into place."""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .db import utcnow
from .errors import StorageError, ValidationError, write_failed
from .workspace import Workspace

FORMAT = 1
MANIFEST = "tailor-backup.json"
DB_NAME = "tailor.db"
_DB_FILES = {DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal"}
Progress = Callable[[str], None]
MAX_MANIFEST_BYTES = 64 << 20  # a manifest lists paths and hashes: even 100k files stay far below
# Tailor's archives hold weights, indexes and a database, which gzip shrinks a few times at
# most; an archive that unpacks to more than this many times its size (beyond a floor that a
# highly compressible small workspace may reach) was not written by `tailor export workspace`.
MAX_RATIO, RATIO_FLOOR_BYTES = 200, 64 << 20
SPARE_BYTES = 64 << 20  # left free on the disk after unpacking
_SHA256 = re.compile(r"[0-9a-f]{64}")


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


@dataclass
class RestoreResult:
    workspace: Path
    files: int
    tables: dict[str, int]
    seconds: float

    def summary(self) -> str:
        return (
            f"Restored {self.files} files and {sum(self.tables.values())} database rows into {self.workspace} "
            f"({self.seconds:.1f} s)"
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
            if name.startswith(".") or (rel_dir == Path(".") and (name in _DB_FILES or name == MANIFEST)):
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
            migrations = {}
            if "migrations" in tables:
                for ns, name in dst.execute("SELECT namespace, name FROM migrations ORDER BY namespace, version"):
                    migrations.setdefault(ns, []).append(name)
        finally:
            dst.close()
            src.close()
        files, skipped = _workspace_files(workspace.root, include_models, {dest, tmp_archive})
        entries = []
        say(f"Archiving {len(files)} files...")
        with tarfile.open(tmp_archive, mode, **kwargs) as tar:
            db_entry = {"path": DB_NAME, "size": snapshot.stat().st_size, "sha256": _sha256(snapshot)}
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
    total = sum(e["size"] for e in entries) + db_entry["size"]
    result = BackupResult(dest, len(entries) + 1, total, tables, time.perf_counter() - started, skipped)
    say(result.summary())
    return result


def is_empty_workspace(path: Path | str) -> bool:
    """True when `path` holds nothing worth keeping: it does not exist, or it holds only empty
    folders and a database whose tables have no rows (what opening a new workspace creates)."""
    path = Path(path).expanduser()
    if not path.exists():
        return True
    if not path.is_dir():
        return False
    for item in path.rglob("*"):
        if item.is_dir() and not item.is_symlink():
            continue
        rel = item.relative_to(path)
        if len(rel.parts) == 1 and item.name in _DB_FILES:
            continue
        return False
    db = path / DB_NAME
    if db.is_file():
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            counts = table_counts(conn)
        except sqlite3.DatabaseError:
            return False
        finally:
            conn.close()
        if any(n for t, n in counts.items() if t != "migrations"):
            return False
    return True


def read_manifest(archive: Path | str) -> dict:
    """The archive's manifest, checked for the shape restore relies on (ValidationError, with
    the archive's name and what is wrong, otherwise)."""
    archive = Path(archive)
    try:
        with tarfile.open(archive, "r:*") as tar:
            member = tar.getmember(MANIFEST)
            fh = tar.extractfile(member) if member.isfile() else None
            if fh is None:
                raise ValidationError(f"{archive} is not a valid Tailor backup: its {MANIFEST} is not a file")
            if member.size > MAX_MANIFEST_BYTES:
                raise ValidationError(
                    f"{archive} is not a valid Tailor backup: its {MANIFEST} is "
                    f"{member.size / 1e6:.0f} MB, far beyond any manifest Tailor writes"
                )
            manifest = json.loads(fh.read())
    except KeyError:
        raise ValidationError(f"{archive} is not a Tailor backup (no {MANIFEST} inside)") from None
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise ValidationError(f"{archive} cannot be read as a Tailor backup: {exc}") from exc
    problem = manifest_problem(manifest)
    if problem:
        raise ValidationError(f"{archive} is not a valid Tailor backup: its manifest {problem}")
    return manifest


def _kind(value) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


def _safe_member_name(name: str) -> bool:
    """A relative POSIX path that stays inside the folder and is written the one normal way."""
    return (
        bool(name)
        and not name.startswith("/")
        and "\0" not in name
        and posixpath.normpath(name) == name
        and name != "."
        and ".." not in name.split("/")
    )


def _is_size(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def manifest_problem(manifest) -> str | None:
    """What is wrong with a manifest's shape, in words (None when restore can rely on it)."""
    if not isinstance(manifest, dict):
        return f"is {_kind(manifest)}, not an object"
    if manifest.get("format") != FORMAT:
        return f"has backup format {manifest.get('format')!r}; this Tailor reads {FORMAT}"
    if "files" not in manifest:
        return "has no 'files' list"
    files = manifest["files"]
    if not isinstance(files, list):
        return f"has 'files' as {_kind(files)}, not a list"
    seen = set()
    for i, entry in enumerate(files):
        if not isinstance(entry, dict):
            return f"has files[{i}] as {_kind(entry)}, not an object"
        path = entry.get("path")
        if not isinstance(path, str) or not _safe_member_name(path):
            return f"has files[{i}] with path {path!r}, not a relative path inside the workspace"
        if path in (DB_NAME, MANIFEST) or path in seen:
            return f"lists {path!r} more than once"
        seen.add(path)
        if not _is_size(entry.get("size")):
            return f"has {path!r} with size {entry.get('size')!r}, not a byte count"
        if not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"]):
            return f"has {path!r} without a sha256 checksum"
    db = manifest.get("database")
    if not isinstance(db, dict):
        return f"has 'database' as {_kind(db)}, not an object"
    if not _is_size(db.get("size")) or not isinstance(db.get("sha256"), str) or not _SHA256.fullmatch(db["sha256"]):
        return "has no size and sha256 checksum for the database"
    tables = db.get("tables")
    if not isinstance(tables, dict) or not all(isinstance(k, str) and _is_size(v) for k, v in tables.items()):
        return "has no table row counts for the database"
    return None


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_members(archive: Path, tar: tarfile.TarFile, manifest: dict, where: Path) -> list[tarfile.TarInfo]:
    """The members to unpack, after checking them all against the manifest, the compression
    ratio and the free space at `where`, so that nothing is written for an archive that would
    not be restored anyway (or would fill the disk first)."""
    expected = {e["path"]: e["size"] for e in manifest["files"]}
    expected[DB_NAME] = manifest["database"]["size"]
    chosen: dict[str, tarfile.TarInfo] = {}
    for member in tar.getmembers():
        name = member.name
        if not _safe_member_name(name):
            if name.startswith("/") or ".." in name.split("/"):
                raise ValidationError(f"{archive} cannot be unpacked: {name!r} would land outside the workspace folder")
            raise ValidationError(
                f"{archive} cannot be unpacked: it holds a member named {name!r}, not a path "
                "Tailor writes; the backup is damaged or was altered"
            )
        if member.isdir() and name not in expected:
            continue  # folders are created for the files they hold
        if name == MANIFEST:
            continue
        if not member.isreg() or member.issparse():
            raise ValidationError(f"{archive} cannot be unpacked: {name!r} is not a plain file (a link or a device)")
        if name not in expected:
            raise ValidationError(
                f"{archive} does not match its manifest: it holds {name!r}, which the manifest "
                "does not list; the backup is damaged or was altered"
            )
        if name in chosen:
            raise ValidationError(f"{archive} does not match its manifest: it holds {name!r} twice")
        if member.size != expected[name]:
            raise ValidationError(
                f"{archive} does not match its manifest: {name!r} is {member.size} bytes in the "
                f"archive, {expected[name]} in the manifest; the backup is damaged or was altered"
            )
        chosen[name] = member
    missing = sorted(set(expected) - set(chosen))
    if missing:
        raise ValidationError(f"{archive} does not match its manifest (missing: {missing[:5]}); the backup is damaged")
    total = sum(expected.values())
    packed = archive.stat().st_size
    if total > RATIO_FLOOR_BYTES and total > MAX_RATIO * max(packed, 1):
        raise ValidationError(
            f"{archive} would unpack to {total / 1e6:.0f} MB from {packed / 1e6:.1f} MB (more "
            f"than {MAX_RATIO}x): that is not a backup Tailor wrote, so nothing was unpacked"
        )
    place = _existing_ancestor(where)
    free = shutil.disk_usage(place).free
    if total + SPARE_BYTES > free:
        raise StorageError(
            f"not enough free space to restore {archive.name} in {place}: it unpacks to "
            f"{total / 1e6:.0f} MB and {free / 1e6:.0f} MB are free ({SPARE_BYTES >> 20} MB must "
            "stay spare); free some space or restore elsewhere. Nothing was unpacked."
        )
    return list(chosen.values())


def _unpack(archive: Path, tar: tarfile.TarFile, manifest: dict, target: Path, say: Progress) -> Path:
    """Check the members, then unpack them into a temporary folder beside `target`."""
    try:
        members = _check_members(archive, tar, manifest, target.parent)
    except (tarfile.TarError, OSError) as exc:  # a truncated or corrupt stream
        raise ValidationError(f"{archive} cannot be unpacked: {exc}") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.restore-", dir=target.parent))
    try:
        say(f"Unpacking {archive.name}...")
        try:
            # only the checked members; "data" also refuses absolute names, '..', links, devices
            tar.extractall(stage, members=members, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise ValidationError(f"{archive} cannot be unpacked: {exc}") from exc
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return stage


def restore_workspace(archive: Path | str, target: Path | str, progress: Progress | None = None) -> RestoreResult:
    started = time.perf_counter()
    say = progress or (lambda _m: None)
    archive = Path(archive).expanduser().resolve()
    target = Path(target).expanduser().resolve()
    if not archive.is_file():
        raise ValidationError(f"backup {archive} does not exist")
    if not is_empty_workspace(target):
        raise ValidationError(
            f"{target} is not empty: restore only into a new or empty workspace, so nothing "
            "there is overwritten (choose a new folder with --workspace)"
        )
    manifest = read_manifest(archive)  # its shape checked: an object, files a list of entries, ...
    try:
        with tarfile.open(archive, "r:*") as tar:
            stage = _unpack(archive, tar, manifest, target, say)
    except (tarfile.TarError, OSError) as exc:  # _unpack words its own errors; this is opening it
        raise ValidationError(f"{archive} cannot be unpacked: {exc}") from exc
    try:
        say("Checking every file against the manifest...")
        expected = {e["path"]: e for e in manifest["files"]}
        expected[DB_NAME] = manifest["database"]
        found = {p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file()}
        missing, extra = sorted(set(expected) - found), sorted(found - set(expected))
        if missing or extra:
            raise ValidationError(
                f"{archive} does not match its manifest (missing: {missing[:5]}, unexpected: "
                f"{extra[:5]}); the backup is damaged"
            )
        bad = [
            rel
            for rel, e in expected.items()
            if (stage / rel).stat().st_size != e["size"] or _sha256(stage / rel) != e["sha256"]
        ]
        if bad:
            raise ValidationError(f"{archive} is damaged: {len(bad)} file(s) differ from the manifest, e.g. {bad[0]}")
        conn = sqlite3.connect(stage / DB_NAME)
        try:
            check = conn.execute("PRAGMA integrity_check").fetchone()[0]
            tables = table_counts(conn)
        finally:
            conn.close()
        if check != "ok":
            raise ValidationError(f"the database in {archive} fails SQLite's integrity check: {check}")
        if tables != manifest["database"]["tables"]:
            raise ValidationError(f"the database in {archive} does not have the row counts its manifest lists")
        if target.exists():
            if not is_empty_workspace(target):  # something appeared while we unpacked
                raise ValidationError(f"{target} is no longer empty; restore stopped without touching it")
            shutil.rmtree(target)
        os.replace(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    Workspace(target)  # recreate the standard folders (models/ was probably left out) and WAL mode
    result = RestoreResult(target, len(expected), tables, time.perf_counter() - started)
    say(result.summary())
    return result
