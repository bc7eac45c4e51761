"""`tailor import workspace` of a damaged archive: one line on stderr and exit status 2,
never a traceback (issue #12)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from assistant.backup import MANIFEST, backup_workspace
from assistant.conversations import ConversationLog
from cli.main import main as tailor_main

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def archive(workspace, tmp_path):
    ConversationLog(workspace.db).create(system_prompt="hi")
    path = tmp_path / "backup.tar"
    backup_workspace(workspace, path)
    return path


def _replace_manifest(archive: Path, out: Path, data: bytes) -> Path:
    with tarfile.open(archive) as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            if member.name == MANIFEST:
                member.size = len(data)
                dst.addfile(member, io.BytesIO(data))
            else:
                dst.addfile(member, src.extractfile(member))
    return out


def test_a_manifest_that_is_a_list_gives_one_line_and_exit_2(archive, tmp_path):
    bad = _replace_manifest(archive, tmp_path / "list.tar", b'[{"path": "tailor.db"}]')
    r = subprocess.run(
        [sys.executable, "-m", "cli.main", "import", "workspace", str(bad), "--workspace", str(tmp_path / "restored")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "TAILOR_THREADS": "1"},
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tailor: error:"), r.stderr
    assert str(bad) in lines[0] and "manifest is a list, not an object" in lines[0]
    assert not (tmp_path / "restored").exists()


@pytest.mark.parametrize(
    "manifest, words",
    [
        ({"format": 1, "database": {}}, "has no 'files' list"),
        ({"format": 1, "files": [{"path": "exports/a.txt"}], "database": {}}, "with size None, not a byte count"),
        ({"format": 1, "files": "everything"}, "'files' as a string, not a list"),
    ],
)
def test_a_manifest_without_usable_files_gives_one_line_and_exit_2(archive, tmp_path, capsys, manifest, words):
    bad = _replace_manifest(archive, tmp_path / "bad.tar", json.dumps(manifest).encode())
    code = tailor_main(["import", "workspace", str(bad), "--workspace", str(tmp_path / "restored")])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tailor: error:"), err
    assert str(bad) in lines[0] and words in lines[0]
    assert not (tmp_path / "restored").exists()
