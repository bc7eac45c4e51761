"""Issue #12 (hardening): a web user must not make the server read a file it was never sent.

Every event that takes files (`/knowledge_add_files`, `/knowledge_add_folder`,
`/dataset_import`, `/eval_start`) is called the raw way a script or a hand-made request can
call it, through `/gradio_api/call/<api_name>`, with a `FileData` whose `path` names a file
outside the server's upload folder: an absolute path, a `..` path that starts inside the
upload folder, and a link inside the upload folder that points outside. Each is refused with
a message, and the secret's text shows up nowhere: not in knowledge search, not in the
dataset, not in an evaluation run, not in any file of the workspace. A real upload (through
`/gradio_api/upload`, as the browser sends it) still goes in.

Uploads and the Dataset tab's downloads live in the workspace (`tmp/gradio`), files 0600 and
folders 0700, and nothing lands in the system temp folder. The handler-level check
(ui/uploads.py) is tested on its own as well (tests/ui/test_uploads.py), since Gradio's check,
now on, refuses first."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.server

SECRET = "VAULT-CODE-7f3a9c1e"
ANY = "(any)"


def _meta(path: str | Path) -> dict:
    return {"path": str(path), "orig_name": Path(path).name, "meta": {"_type": "gradio.FileData"}}


def call(server, api_name: str, data: list, timeout: float = 300) -> tuple[str, object]:
    """Call an event the way the browser's scripts do: POST the inputs, then read the
    server-sent events until "complete" or "error". Returns (kind, data)."""
    base = f"{server.url}gradio_api/call/{api_name}"
    r = httpx.post(base, json={"data": data}, timeout=60)
    r.raise_for_status()
    event_id = r.json()["event_id"]
    kind, payload = None, None
    with httpx.stream("GET", f"{base}/{event_id}", timeout=timeout) as s:
        for line in s.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind in ("complete", "error"):
                raw = line.split(":", 1)[1].strip()
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = raw
                return kind, payload
    raise AssertionError(f"{api_name}: the stream ended without a result (last event {kind!r})")


def upload(server, path: Path) -> str:
    """Send a file the way the browser does; returns the server's path for it."""
    with open(path, "rb") as fh:
        r = httpx.post(f"{server.url}gradio_api/upload", files={"files": (path.name, fh)}, timeout=60)
    r.raise_for_status()
    [server_path] = r.json()
    return server_path


def _files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                continue
            try:
                if needle in p.read_bytes():
                    hits.append(str(p))
            except OSError:
                pass
    return hits


def test_file_events_refuse_paths_that_were_not_uploaded(tailor_server, tiny_model_dir, tmp_path):
    ws = tmp_path / "ws"
    # The server's own system temp folder, so what it writes there can be inspected.
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    server = tailor_server(ws, tiny_model_dir, env={"TMPDIR": str(systmp)})

    outside = tmp_path / "outside"
    outside.mkdir()
    secret_doc = outside / "secret.txt"
    secret_doc.write_text(f"The vault code is {SECRET}. Nobody may read this.\n")
    secret_set = outside / "secret.jsonl"
    secret_set.write_text(
        json.dumps({"prompt": f"What is the vault code? {SECRET}", "completion": f"It is {SECRET}."}) + "\n"
    )

    # A genuine upload works, and tells where the server's upload folder is.
    good = tmp_path / "hours.md"
    good.write_text("# Opening hours\n\nThe shop opens at nine on weekdays.\n")
    good_path = upload(server, good)
    kind, out = call(server, "knowledge_add_files", [[_meta(good_path)]])
    assert kind == "complete" and "hours.md" in out[0], out
    upload_root = Path(good_path).parent.parent

    # Three ways to name a file outside: absolute, `..` from inside the upload folder, and a
    # link inside the upload folder that points outside.
    def variants(secret: Path) -> dict[str, str]:
        depth = len(Path(os.path.abspath(upload_root)).parts) - 1
        link_dir = upload_root / f"planted-{secret.suffix[1:]}"
        link_dir.mkdir(exist_ok=True)
        link = link_dir / secret.name
        if not link.is_symlink():
            link.symlink_to(secret)
        return {"absolute": str(secret), "dotdot": str(upload_root / ("../" * depth)) + str(secret), "link": str(link)}

    events = {
        "knowledge_add_files": lambda p: [[_meta(p)]],
        "knowledge_add_folder": lambda p: [[_meta(p)]],
        "dataset_import": lambda p: [_meta(p), "leaked"],
        "eval_start": lambda p: [["base"], ["off"], "uploaded file", _meta(p), 1, 16, ""],  # "": default style prompt
    }
    secrets = {
        "knowledge_add_files": secret_doc,
        "knowledge_add_folder": secret_doc,
        "dataset_import": secret_set,
        "eval_start": secret_set,
    }
    failures = []
    for api_name, make in events.items():
        for how, path in variants(secrets[api_name]).items():
            kind, out = call(server, api_name, make(path))
            text = json.dumps(out, default=str)
            if kind != "error":
                failures.append(f"{api_name} with a {how} path was accepted: {text[:300]}")
            elif "not uploaded" not in text:  # Gradio's own check, or the handler's ("... to this server")
                failures.append(f"{api_name} with a {how} path: refused without saying why: {text[:300]}")
            elif SECRET in text:
                failures.append(f"{api_name} with a {how} path: the refusal shows the secret: {text[:300]}")
    assert not failures, "\n".join(failures)

    # The secret went nowhere.
    kind, hits = call(server, "knowledge_search", [SECRET, 5, "hybrid"])
    assert kind == "complete" and SECRET not in json.dumps(hits), hits
    kind, out = call(server, "dataset_search", [SECRET, ANY, ANY, ANY, ANY, ANY, ANY])
    assert kind == "complete" and SECRET not in json.dumps(out), out
    kind, out = call(server, "eval_list_runs", [None])
    assert kind == "complete" and not (out[0].get("choices") if isinstance(out[0], dict) else out[0]), out
    assert _files_containing(ws, SECRET.encode()) == []
    assert _files_containing(systmp, SECRET.encode()) == []
    assert server.proc.poll() is None

    # The good document is still there and searchable.
    kind, hits = call(server, "knowledge_search", ["opens at nine", 3, "hybrid"])
    assert kind == "complete" and "hours.md" in json.dumps(hits)


# ---- uploads and exports are private and live in the workspace ------------------------------
def _mode(p: Path) -> int:
    return os.lstat(p).st_mode & 0o777


def test_uploads_and_exports_stay_private_in_the_workspace(tailor_server, tiny_model_dir, tmp_path):
    ws = tmp_path / "ws"
    systmp = tmp_path / "systmp"  # the server's system temp folder (TMPDIR), to see what lands there
    systmp.mkdir()
    server = tailor_server(ws, tiny_model_dir, env={"TMPDIR": str(systmp)})
    private = (ws / "tmp" / "gradio").resolve()

    doc = tmp_path / "hours.md"
    doc.write_text("# Opening hours\n\nThe shop opens at nine on weekdays.\n")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Q{i}?", "completion": f"A{i}."}) + "\n" for i in range(3)))
    doc_path, pairs_path = Path(upload(server, doc)), Path(upload(server, pairs))
    kind, out = call(server, "knowledge_add_files", [[_meta(doc_path)]])
    assert kind == "complete" and "hours.md" in out[0], out
    kind, out = call(server, "dataset_import", [_meta(pairs_path), ""])
    assert kind == "complete" and "Imported 3 examples" in out[0], out

    exports = {}
    for fmt in ("messages", "hf"):  # one file, and a folder (sent as a .zip)
        kind, out = call(server, "dataset_export", [fmt, False])
        assert kind == "complete", out
        exports[fmt] = Path(out[0]["path"])
        # Gradio serves it for download.
        r = httpx.get(f"{server.url}gradio_api/file={exports[fmt]}", timeout=60)
        assert r.status_code == 200 and r.content == exports[fmt].read_bytes()
    assert exports["hf"].suffix == ".zip"

    # Every upload and export is in the workspace: the file 0600, each folder up to and
    # including <workspace>/tmp 0700.
    for path in (doc_path, pairs_path, *exports.values()):
        real = path.resolve()
        assert private in real.parents, f"{real} is not under {private}"
        assert _mode(real) == 0o600, f"{real}: {oct(_mode(real))}"
        for parent in real.parents:
            assert _mode(parent) == 0o700, f"{parent}: {oct(_mode(parent))}"
            if parent == ws / "tmp":
                break
    # Nothing under the workspace's tmp/ is readable by other users.
    for dirpath, _dirs, names in os.walk(ws / "tmp"):
        for name in names:
            assert not _mode(Path(dirpath) / name) & 0o044, Path(dirpath) / name

    # Nothing Tailor or Gradio wrote is in the system temp folder.
    leftovers = sorted(p.name for p in systmp.iterdir() if p.name.startswith(("gradio", "tailor")) or _mode(p) & 0o004)
    assert leftovers == [], leftovers
