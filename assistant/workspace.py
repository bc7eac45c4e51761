"""The workspace: one folder that holds everything Tailor saves.

workspace/
  tailor.db      SQLite (WAL): conversations, messages, feedback, examples, jobs, ...
  models/        converted model checkpoints (the embedded GGUF becomes fp32 safetensors here)
  adapters/      published LoRA adapters, one folder each
  indexes/       FAISS index files
  jobs/          training job folders: config, logs, checkpoints
  exports/       files the user exported
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .db import Database
from .errors import ValidationError

SUBFOLDERS = ("models", "adapters", "indexes", "jobs", "exports", "uploads")


class Workspace:
    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser().resolve()
        try:
            # A new workspace is private to its owner (0700, and tailor.db 0600 below): it holds
            # every conversation. An existing folder keeps the permissions its owner gave it.
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            for name in SUBFOLDERS:
                (self.root / name).mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ValidationError(f"Cannot use workspace folder {self.root}: {exc.strerror or exc}") from exc
        db_path = self.root / "tailor.db"
        new_db = not db_path.exists()
        self.db = Database(db_path)
        if new_db:
            os.chmod(db_path, 0o600)  # SQLite gives its -wal and -shm files the same mode

    models_dir = property(lambda self: self.root / "models")
    adapters_dir = property(lambda self: self.root / "adapters")
    indexes_dir = property(lambda self: self.root / "indexes")
    jobs_dir = property(lambda self: self.root / "jobs")
    exports_dir = property(lambda self: self.root / "exports")
    uploads_dir = property(lambda self: self.root / "uploads")

    def inside(self, path: Path | str) -> Path:
        """Resolve `path` and refuse it unless it lies inside the workspace."""
        resolved = (self.root / path).resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise ValidationError(f"{path} is outside the workspace {self.root}")
        return resolved

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"


@contextmanager
def publish_dir(final: Path):
    """Build a folder under a temporary name beside `final`, then rename it into place.

    A crash or an exception leaves no half-written folder where readers look. If `final`
    exists it is replaced (the old copy is moved aside first, then removed; if the new one
    cannot be moved into place, the old one is put back)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    old = None
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException:
        if old is not None and not final.exists():
            os.replace(old, final)  # the new copy did not go in: put the old one back
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` for the caller to write (with any library: faiss, numpy);
    once the block ends it is fsynced and renamed over `path`, so readers see the old file or the
    whole new one, never a half-written one. On an error the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write a file under a temporary name and rename it into place."""
    with replaced_atomically(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
