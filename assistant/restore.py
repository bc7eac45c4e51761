"""Restore a workspace backup (made by assistant.backup) into an empty workspace.

Restore refuses a workspace that holds anything (so it can never overwrite work). Before it
writes a byte it checks the manifest's shape, every archive member against the manifest
(only plain files it lists, each with the size it declares, nothing twice), the total against
a sane compression ratio and against the free space where it unpacks. Then it unpacks those
members into a temporary folder beside the target with tarfile's "data" filter (no absolute
paths, no `..`, no links or devices), checks every file's sha256 and the database with
`PRAGMA integrity_check`, and only then renames the folder into place."""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import sqlite3
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .backup import DB_FILES, DB_NAME, FORMAT, MANIFEST, Progress, _sha256, table_counts
from .errors import StorageError, ValidationError
from .workspace import Workspace

MAX_MANIFEST_BYTES = 64 << 20  # a manifest lists paths and hashes: even 100k files stay far below
# Tailor's archives hold weights, indexes and a database, which gzip shrinks a few times at
# most; an archive that unpacks to more than this many times its size (beyond a floor that a
# highly compressible small workspace may reach) was not written by `tailor export workspace`.
MAX_RATIO, RATIO_FLOOR_BYTES = 200, 64 << 20
SPARE_BYTES = 64 << 20  # left free on the disk after unpacking
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
        if len(rel.parts) == 1 and item.name in DB_FILES:
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
