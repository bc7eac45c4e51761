"""A full disk or a read-only place during an export: every exporter (workspace backup, adapter
folder and zip, dataset as JSONL / parquet / datasets folder, merged model, and the Dataset tab's
export into the workspace) fails with one clear message that names the path and the cause, leaves
no partial or temporary file where it was writing, and leaves every conversation, example,
adapter and document in the workspace as it was (same rows, same files, SQLite integrity ok).

Two ways to make the disk fail:
- real: a tiny tmpfs mounted as the destination (ENOSPC), or remounted read-only (EROFS). Needs
  root and the right to mount; skipped with the reason otherwise.
- injected, always run: the write boundary (open/os.open/os.fdopen/os.mkdir and the safetensors
  writer) raises the same OSError for paths under the destination, after writing what still fits.

The CLI is run as a subprocess on the real full / read-only disk (exit 2, `tailor: error: ...`,
no traceback) and in-process with the injected failure."""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from assistant.adapters import AdapterCatalog
from assistant.backup import backup_workspace
from assistant.conversations import ConversationLog
from assistant.errors import StorageError
from assistant.workspace import Workspace

REPO_ROOT = Path(__file__).resolve().parents[2]
N_CONVERSATIONS, N_EXAMPLES = 3, 120
REASONS = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system"}
FILLER = ".filler"  # what fills the small disk; not part of the workspace


# ---- a workspace with something of everything ------------------------------------------------


@pytest.fixture(scope="module")
def filled(tmp_path_factory, tiny_model_dir, random_lora) -> Path:
    """Conversations, examples, an adapter and a document (through the real services); shared by
    the tests of this file, which all leave it unchanged, and copied where a test needs its own."""
    from retrieval.service import KnowledgeService
    from tuning import open_curation
    from tuning.example import chat_example

    root = tmp_path_factory.mktemp("faults") / "ws"
    ws = Workspace(root)
    log = ConversationLog(ws.db)
    for i in range(N_CONVERSATIONS):
        conv = log.create(system_prompt=f"system {i}")
        log.add_message(conv.id, "user", f"question {i} — ünïcode ✓")
        log.add_message(conv.id, "assistant", f"answer {i}")
    store = open_curation(ws).store
    for i in range(N_EXAMPLES):
        store.add(
            chat_example(
                f"How do I fix puncture number {i}?",
                f"Ahoy, rider! Patch number {i}: " + "lever, patch, pump, ride. " * 8,
            )
        )
    # a real PEFT LoRA adapter (random weights, ~40 KB: bigger than the space left on the disks below)
    random_lora(
        tiny_model_dir,
        ws.adapters_dir / "pirate",
        seed=3,
        r=16,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "down_proj"],
        meta={"note": "fault test"},
    )
    result = KnowledgeService(ws).add_bytes("hours.md", b"# Hours\n\nWe open at nine and close at six, every day.\n")
    assert result.ok, result
    return root


def _state(root: Path) -> dict:
    """Every row of every table and every file's hash (the database files aside: their rows are
    compared instead), after SQLite's integrity check."""
    conn = sqlite3.connect(root / "tailor.db", timeout=30)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        rows = {t: sorted(map(repr, conn.execute(f'SELECT * FROM "{t}"').fetchall())) for t in tables}
    finally:
        conn.close()
    files = {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith("tailor.db") and p.name != FILLER
    }
    return {"rows": rows, "files": files}


def _assert_intact(root: Path, before: dict) -> None:
    after = _state(root)
    assert {t: len(r) for t, r in after["rows"].items()} == {t: len(r) for t, r in before["rows"].items()}
    assert after == before
    # and the app's own services still read all of it
    from retrieval.service import KnowledgeService
    from tuning import open_curation

    ws = Workspace(root)
    assert len(ConversationLog(ws.db).list()) == N_CONVERSATIONS
    assert len(open_curation(ws).store.list()) == N_EXAMPLES
    assert [a.name for a in AdapterCatalog(ws.adapters_dir).list()] == ["pirate"]
    assert [d.name for d in KnowledgeService(ws).documents()] == ["hours.md"]


def _listing(folder: Path) -> list[str]:
    """Everything under `folder`, dot-named temporaries included."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# ---- the exporters -----------------------------------------------------------------------------


def _examples(root: Path):
    from tuning import open_curation
    from tuning.example_table import ExampleFilter

    return open_curation(Workspace(root)).store.list(ExampleFilter(status="active"))


def _export(kind: str, root: Path, dest_dir: Path, model_dir: Path) -> Path:
    """Run exporter `kind` from the workspace at `root` into `dest_dir`; returns the path it writes."""
    from tuning.dataset_export import export_examples
    from tuning.export import export_adapter, export_merged

    catalog = AdapterCatalog(root / "adapters")
    if kind == "workspace backup":
        dest = dest_dir / "backup.tar.gz"
        backup_workspace(Workspace(root), dest)
    elif kind == "adapter folder":
        dest = dest_dir / "pirate"
        export_adapter(catalog, "pirate", dest)
    elif kind == "adapter zip":
        dest = dest_dir / "pirate.zip"
        export_adapter(catalog, "pirate", dest, fmt="zip")
    elif kind == "dataset jsonl":
        dest = dest_dir / "data.jsonl"
        export_examples(_examples(root), dest, "messages")
    elif kind == "dataset parquet":
        dest = dest_dir / "data.parquet"
        export_examples(_examples(root), dest, "hf")
    elif kind == "dataset folder":
        dest = dest_dir / "data"
        export_examples(_examples(root), dest, "hf")
    elif kind == "merged model":
        dest = dest_dir / "merged"
        export_merged(model_dir, catalog, "pirate", dest, base_name="tiny")
    else:
        raise AssertionError(kind)
    return dest


KINDS = [
    "workspace backup",
    "adapter folder",
    "adapter zip",
    "dataset jsonl",
    "dataset parquet",
    "dataset folder",
    "merged model",
]
DEST_NAMES = {
    "workspace backup": "backup.tar.gz",
    "adapter folder": "pirate",
    "adapter zip": "pirate.zip",
    "dataset jsonl": "data.jsonl",
    "dataset parquet": "data.parquet",
    "dataset folder": "data",
    "merged model": "merged",
}


def _assert_clear_failure(exc_info, dest: Path, code: int) -> None:
    message = str(exc_info.value)
    assert str(dest) in message and REASONS[code] in message, message
    assert "Nothing was left there" in message


# ---- injected failures: always run ---------------------------------------------------------------


class _Disk:
    """What the write boundary sees under `root`: `free` bytes left (ENOSPC past them), or a
    read-only file system (EROFS on creating anything)."""

    def __init__(self, root: Path, code: int, free: int = 4096):
        self.root, self.code, self.free = root.resolve(), code, free

    def covers(self, path) -> bool:
        try:
            return Path(os.fsdecode(path)).resolve().is_relative_to(self.root)
        except (TypeError, ValueError):
            return False

    def error(self, path) -> OSError:
        return OSError(self.code, os.strerror(self.code), os.fsdecode(path))


class _FullFile:
    """A file on a nearly full disk: a write that does not fit writes what fits, then fails."""

    def __init__(self, f, disk: _Disk, path):
        self._f, self._disk, self._path = f, disk, path

    def write(self, data):
        size = len(data) if isinstance(data, str) else memoryview(data).nbytes
        if size > self._disk.free:
            if not isinstance(data, str):
                self._f.write(bytes(memoryview(data).cast("B")[: self._disk.free]))
                self._f.flush()
            self._disk.free = 0
            raise self._disk.error(self._path)
        self._disk.free -= size
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __iter__(self):
        return iter(self._f)


def _writing(mode: str) -> bool:
    return any(c in mode for c in "wax+")


@pytest.fixture
def failing_disk(monkeypatch):
    """`failing_disk(root, errno.ENOSPC | errno.EROFS)`: from now on, writes under `root` fail."""

    def install(root: Path, code: int) -> _Disk:
        disk = _Disk(root, code)
        real_open, real_fdopen, real_os_open, real_mkdir = builtins.open, os.fdopen, os.open, os.mkdir

        def wrap(f, path, mode):
            if disk.covers(path) and _writing(mode):
                if disk.code == errno.EROFS:
                    f.close()
                    raise disk.error(path)
                return _FullFile(f, disk, path)
            return f

        def fake_open(file, mode="r", *args, **kwargs):
            if disk.code == errno.EROFS and not isinstance(file, int) and disk.covers(file) and _writing(mode):
                raise disk.error(file)
            f = real_open(file, mode, *args, **kwargs)
            return f if isinstance(file, int) else wrap(f, file, mode)

        def fake_fdopen(fd, mode="r", *args, **kwargs):
            return wrap(real_fdopen(fd, mode, *args, **kwargs), os.readlink(f"/proc/self/fd/{fd}"), mode)

        def fake_os_open(path, flags, *args, **kwargs):
            if disk.code == errno.EROFS and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and disk.covers(path):
                raise disk.error(path)
            return real_os_open(path, flags, *args, **kwargs)

        def fake_mkdir(path, *args, **kwargs):
            if disk.code == errno.EROFS and disk.covers(path):
                if os.path.isdir(path):  # the kernel answers EEXIST before EROFS
                    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fsdecode(path))
                raise disk.error(path)
            return real_mkdir(path, *args, **kwargs)

        def fake_safe_save_file(tensors, filename, metadata=None):
            # safetensors writes from Rust, past Python's open(): write through it instead
            from safetensors.torch import save

            with fake_open(filename, "wb") as fh:
                fh.write(save(tensors, metadata=metadata))

        for target in (builtins, io):
            monkeypatch.setattr(target, "open", fake_open)
        monkeypatch.setattr(tarfile, "bltn_open", fake_open)
        monkeypatch.setattr(os, "fdopen", fake_fdopen)
        monkeypatch.setattr(os, "open", fake_os_open)
        monkeypatch.setattr(os, "mkdir", fake_mkdir)
        monkeypatch.setattr(shutil, "_USE_CP_SENDFILE", False)  # copy through write(), not sendfile
        import transformers.modeling_utils

        monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", fake_safe_save_file)
        return disk

    return install


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["disk-full", "read-only"])
@pytest.mark.parametrize("kind", KINDS)
def test_injected_failure_is_clear_and_loses_nothing(kind, code, filled, tiny_model_dir, tmp_path, failing_disk):
    before = _state(filled)
    dest_dir = tmp_path / "dest"
    dest_dir.mkdir()
    (dest_dir / "earlier.txt").write_text("someone's file")
    disk = failing_disk(dest_dir, code)
    with pytest.raises(StorageError) as exc_info:
        _export(kind, filled, dest_dir, tiny_model_dir)
    if code == errno.ENOSPC:
        assert disk.free == 0  # it really wrote until the disk was full
    _assert_clear_failure(exc_info, dest_dir / DEST_NAMES[kind], code)
    assert _listing(dest_dir) == ["earlier.txt"]  # no partial export, no temporary left behind
    _assert_intact(filled, before)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["disk-full", "read-only"])
def test_injected_failure_in_the_workspace_exports_folder(code, filled, tmp_path, failing_disk):
    """The Dataset tab's Export button writes into workspace/exports (ui/dataset_tab.py: do_export
    calls export_examples there and shows a TailorError's message)."""
    from tuning.dataset_export import export_examples

    before = _state(filled)
    exports = filled / "exports"
    listing = _listing(exports)
    failing_disk(exports, code)
    dest = exports / "examples-20260101T000000.jsonl"
    with pytest.raises(StorageError) as exc_info:
        export_examples(_examples(filled), dest, "messages")
    _assert_clear_failure(exc_info, dest, code)
    assert _listing(exports) == listing
    _assert_intact(filled, before)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["disk-full", "read-only"])
@pytest.mark.parametrize(
    "argv, name",
    [
        (["export", "workspace"], "backup.tar.gz"),
        (["export", "adapter", "pirate", "--zip"], "pirate.zip"),
        (["export", "dataset"], "data.jsonl"),
    ],
    ids=["workspace", "adapter", "dataset"],
)
def test_cli_in_process_with_injected_failure(argv, name, code, filled, tmp_path, failing_disk, capsys):
    from cli.main import main

    before = _state(filled)
    dest_dir = tmp_path / "dest"
    dest_dir.mkdir()
    failing_disk(dest_dir, code)
    dest = dest_dir / name
    args = argv[:3] + [str(dest)] + argv[3:] if argv[1] == "adapter" else argv + [str(dest)]
    assert main(args + ["--workspace", str(filled)]) == 2
    err = capsys.readouterr().err
    # progress lines may come first; the error is the last line
    assert err.strip().splitlines()[-1].startswith(f"tailor: error: could not write {dest}: {REASONS[code]}"), err
    assert "Traceback" not in err
    assert _listing(dest_dir) == []
    _assert_intact(filled, before)


# ---- real failures: a tiny tmpfs, full or read-only ------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """`small_disk(name, size, copy_of=...)`: a real tmpfs mounted at tmp_path/name (holding a
    copy of a folder if asked); unmounted afterwards. Skips when mounting is not possible."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and `mount`; the injected-error tests cover the same code")
    mounted: list[Path] = []

    def make(name: str, size: str = "256k", copy_of: Path | None = None) -> Path:
        where = tmp_path / name
        where.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tailor-test", str(where)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); the injected-error tests cover the same code")
        mounted.append(where)
        if copy_of is not None:
            shutil.copytree(copy_of, where, dirs_exist_ok=True)
        return where

    yield make
    for where in reversed(mounted):
        # A failed test's traceback can still hold a file open there: detach lazily then.
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(disk: Path, free: int = 4096) -> None:
    """Fill the disk until `free` bytes are left (a page: a few small writes still succeed)."""
    st = os.statvfs(disk)
    with open(disk / FILLER, "wb") as fh:
        fh.write(b"\0" * (st.f_bavail * st.f_frsize - free))
    st = os.statvfs(disk)
    assert st.f_bavail * st.f_frsize <= free


def _remount(disk: Path, read_only: bool) -> None:
    subprocess.run(["mount", "-o", "remount," + ("ro" if read_only else "rw"), str(disk)], check=True)


def _break(disk: Path, read_only: bool) -> None:
    _remount(disk, True) if read_only else _fill(disk)


@pytest.mark.parametrize("read_only", [False, True], ids=["disk-full", "read-only"])
@pytest.mark.parametrize("kind", KINDS)
def test_real_full_or_read_only_destination(kind, read_only, filled, tiny_model_dir, small_disk):
    before = _state(filled)
    disk = small_disk("dest")
    _break(disk, read_only)
    listing = _listing(disk)
    with pytest.raises(StorageError) as exc_info:
        _export(kind, filled, disk, tiny_model_dir)
    _assert_clear_failure(exc_info, disk / DEST_NAMES[kind], errno.EROFS if read_only else errno.ENOSPC)
    assert _listing(disk) == listing
    _assert_intact(filled, before)


@pytest.mark.parametrize("read_only", [False, True], ids=["disk-full", "read-only"])
def test_real_full_or_read_only_workspace_during_the_dataset_tab_export(read_only, filled, small_disk):
    """The whole workspace sits on the small disk (a copy of `filled`), as when the user's own
    disk fills up: the export into workspace/exports fails, the database on that same disk stays
    whole, and once space is back (or the disk writable) the same export works."""
    from tuning.dataset_export import export_examples

    before = _state(filled)
    disk = small_disk("ws", size="8m", copy_of=filled)
    examples = _examples(disk)  # what the Dataset tab has listed before the disk fills up
    _break(disk, read_only)
    listing = _listing(disk)
    dest = disk / "exports" / "examples-20260101T000000.jsonl"
    with pytest.raises(StorageError) as exc_info:
        export_examples(examples, dest, "messages")
    _assert_clear_failure(exc_info, dest, errno.EROFS if read_only else errno.ENOSPC)
    assert _listing(disk) == listing
    # Space back (or the disk writable again): nothing was lost and the same export works. (Not
    # checked while the disk is full: SQLite cannot open a WAL database whose -shm file must be
    # created first, so reads there depend on another connection still being open.)
    _remount(disk, False) if read_only else (disk / FILLER).unlink()
    _assert_intact(disk, before)
    export_examples(examples, dest, "messages")  # the app carries on once the disk is usable
    assert len(dest.read_text(encoding="utf-8").splitlines()) == N_EXAMPLES


def _tailor(*args):
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TAILOR_THREADS": "1"},
    )


@pytest.mark.parametrize(
    "argv, name, read_only",
    [
        (["export", "workspace"], "backup.tar.gz", False),
        (["export", "dataset"], "data.jsonl", True),
        (["export", "adapter", "pirate", "--zip"], "pirate.zip", False),
    ],
    ids=["workspace-disk-full", "dataset-read-only", "adapter-zip-disk-full"],
)
def test_cli_on_a_real_full_or_read_only_disk(argv, name, read_only, filled, small_disk):
    before = _state(filled)
    disk = small_disk("dest")
    _break(disk, read_only)
    listing = _listing(disk)
    dest = disk / name
    args = argv[:3] + [dest] + argv[3:] if argv[1] == "adapter" else argv + [dest]
    r = _tailor(*args, "--workspace", filled)
    reason = REASONS[errno.EROFS if read_only else errno.ENOSPC]
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"tailor: error: could not write {dest}: {reason}"), r.stderr
    assert "Traceback" not in r.stderr
    assert _listing(disk) == listing
    _assert_intact(filled, before)
