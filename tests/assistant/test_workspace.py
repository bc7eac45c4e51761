import os
from pathlib import Path

import pytest

from assistant.errors import ValidationError
from assistant.settings import Settings
from assistant.workspace import SUBFOLDERS, Workspace, publish_dir, write_atomic


def test_workspace_layout(tmp_path):
    ws = Workspace(tmp_path / "w")
    for name in SUBFOLDERS:
        assert (ws.root / name).is_dir()
    assert (ws.root / "tailor.db").is_file()


def test_inside_refuses_escape(tmp_path):
    ws = Workspace(tmp_path / "w")
    assert ws.inside("uploads/a.txt") == ws.root / "uploads" / "a.txt"
    with pytest.raises(ValidationError):
        ws.inside("../outside.txt")
    with pytest.raises(ValidationError):
        ws.inside("/etc/passwd")


def test_unusable_workspace_gives_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValidationError, match="Cannot use workspace"):
        Workspace(blocker / "ws")


def test_publish_dir_is_all_or_nothing(tmp_path):
    final = tmp_path / "adapter"
    with publish_dir(final) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (final / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with publish_dir(final) as tmp:
            (tmp / "a.txt").write_text("half-written")
            raise RuntimeError("crash")
    assert (final / "a.txt").read_text() == "one"  # the old version is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no temp folder left behind
    with publish_dir(final) as tmp:
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]


def test_publish_dir_puts_the_old_copy_back_when_the_new_one_cannot_go_in(tmp_path, monkeypatch):
    final = tmp_path / "adapter"
    with publish_dir(final) as tmp:
        (tmp / "a.txt").write_text("one")
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(src).name.endswith(".tmp"):  # the new copy's rename into place
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        with publish_dir(final) as tmp:
            (tmp / "a.txt").write_text("two")
    monkeypatch.setattr(os, "replace", real_replace)
    assert (final / "a.txt").read_text() == "one"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # neither the new nor an old-* copy left


def test_write_atomic(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    write_atomic(path, "hello")
    assert path.read_text() == "hello"
    write_atomic(path, b"bytes")
    assert path.read_bytes() == b"bytes"
    assert os.listdir(path.parent) == ["f.txt"]


def test_settings_from_env_and_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("TAILOR_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("TAILOR_PORT", "9000")
    monkeypatch.setenv("TAILOR_AUTH", "ann:pw1,bob:pw2")
    s = Settings.from_env()
    assert s.home == tmp_path / "h" and s.port == 9000
    assert s.auth_pairs() == [("ann", "pw1"), ("bob", "pw2")]
    assert Settings.from_env(port=1234, home=tmp_path / "o").port == 1234
    monkeypatch.setenv("TAILOR_PORT", "abc")
    with pytest.raises(ValueError, match="TAILOR_PORT"):
        Settings.from_env()


@pytest.mark.parametrize(
    ("value", "expected"), [(None, False), ("on", True), ("1", True), ("OFF", False), ("no", False)]
)
def test_flash_attention_is_an_on_off_switch(monkeypatch, value, expected):
    if value is not None:
        monkeypatch.setenv("TAILOR_FLASH_ATTENTION", value)
    assert Settings.from_env().flash_attention is expected


def test_prefill_chunk_is_read_from_the_environment(monkeypatch):
    assert Settings.from_env().prefill_chunk == 128
    monkeypatch.setenv("TAILOR_PREFILL_CHUNK", "32")
    assert Settings.from_env().prefill_chunk == 32
    monkeypatch.setenv("TAILOR_PREFILL_CHUNK", "lots")
    with pytest.raises(ValueError, match="TAILOR_PREFILL_CHUNK"):
        Settings.from_env()


def test_a_switch_that_is_neither_on_nor_off_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TAILOR_FLASH_ATTENTION", "fast")
    with pytest.raises(ValueError, match="TAILOR_FLASH_ATTENTION must be on or off, got 'fast'"):
        Settings.from_env()


def test_settings_loopback_and_bad_auth():
    assert Settings(host="127.0.0.1").is_loopback and Settings(host="localhost").is_loopback
    assert not Settings(host="0.0.0.0").is_loopback
    with pytest.raises(ValueError):
        Settings(auth="nopassword").auth_pairs()


def test_a_new_workspace_is_private(tmp_path):
    """Issue #12: files Tailor keeps (conversations above all) are not readable by other local
    users when Tailor created the folder; an existing folder keeps its owner's choice."""
    import stat

    from assistant.workspace import Workspace

    ws = Workspace(tmp_path / "new")
    assert stat.S_IMODE(ws.root.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(ws.db.path.stat().st_mode) == 0o600
    assert all(stat.S_IMODE((ws.root / n).stat().st_mode) & 0o077 == 0 for n in ("adapters", "exports", "uploads"))
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    Workspace(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
