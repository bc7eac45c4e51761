"""The handler-level upload check (ui/uploads.py), without a server (issue #12, hardening): a
path that was not uploaded to this server is refused before anything reads it, uploads land in
a private folder of the workspace, and the tabs' file handlers check inside a web event. The
same refusals through the running server: tests/server/test_upload_hardening.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SECRET = "VAULT-CODE-7f3a9c1e"


def _mode(p: Path) -> int:
    return os.lstat(p).st_mode & 0o777


def test_check_uploaded_refuses_everything_but_a_plain_uploaded_file(tmp_path):
    from ui.uploads import NotUploaded, check_uploaded

    folder = tmp_path / "uploads"
    (folder / "abc").mkdir(parents=True)
    good = folder / "abc" / "notes.md"
    good.write_text("fine")
    os.chmod(good, 0o644)
    outside = tmp_path / "secret.txt"
    outside.write_text(SECRET)
    (folder / "link.txt").symlink_to(outside)
    (folder / "inner-link.md").symlink_to(good)  # even one pointing inside: Gradio never writes links
    (folder / "linked-dir").symlink_to(tmp_path, target_is_directory=True)

    assert check_uploaded(str(good), folder) == str(good.resolve())
    assert _mode(good) == 0o600 and _mode(folder / "abc") == 0o700  # tightened on the way
    assert check_uploaded(str(good), folder, {str(good)}) == str(good.resolve())
    # `..` that stays inside names the same uploaded file.
    assert check_uploaded(f"{folder}/../uploads/abc/notes.md", folder) == str(good.resolve())

    refused = {
        "outside": outside,
        "dotdot": f"{folder}/abc/../../secret.txt",
        "link to outside": folder / "link.txt",
        "link inside": folder / "inner-link.md",
        "through a linked folder": folder / "linked-dir" / "secret.txt",
        "the folder itself": folder,
        "a folder inside": folder / "abc",
        "missing": folder / "abc" / "gone.md",
        "relative": "secret.txt",
    }
    for how, path in refused.items():
        with pytest.raises(NotUploaded, match="not uploaded to this server"):
            check_uploaded(str(path), folder)
            pytest.fail(f"{how}: accepted")
    # In the folder but never received by the upload route: refused when the list is known.
    with pytest.raises(NotUploaded):
        check_uploaded(str(good), folder, {str(folder / "abc" / "other.md")})
    # FileData-like objects and gradio's NamedString both carry the path.
    from gradio.data_classes import FileData

    assert check_uploaded(FileData(path=str(good)), folder) == str(good.resolve())
    with pytest.raises(NotUploaded):
        check_uploaded(FileData(path=str(outside)), folder)


def test_handlers_check_paths_inside_a_web_event(tmp_path, monkeypatch):
    """Inside a Gradio event (LocalContext.blocks set, as for every web request) the tabs'
    handlers refuse a path that is not an upload, before reading it."""
    from gradio.context import LocalContext

    from ui import uploads

    folder = tmp_path / "gradio"
    folder.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    outside = tmp_path / "secret.md"
    outside.write_text(SECRET)

    class FakeBlocks:
        upload_file_set: set = set()

    assert uploads.uploaded_path(str(outside)) == str(outside)  # a direct Python call: trusted
    token = LocalContext.blocks.set(FakeBlocks())
    try:
        with pytest.raises(uploads.NotUploaded, match="secret.md was not uploaded to this server"):
            uploads.uploaded_paths([str(outside)])
        inside = folder / "h" / "ok.md"
        inside.parent.mkdir()
        inside.write_text("ok")
        with pytest.raises(uploads.NotUploaded):  # in the folder, but the upload route never wrote it
            uploads.uploaded_path(str(inside))
        FakeBlocks.upload_file_set = {str(inside)}
        assert uploads.uploaded_paths(str(inside)) == [str(inside.resolve())]
    finally:
        LocalContext.blocks.reset(token)


def test_use_workspace_folder_makes_a_private_folder(tmp_path, monkeypatch):
    from ui import uploads

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    import sys

    for name in ("gradio.route_utils", "gradio.routes", "gradio.mcp", "gradio.screen_recording_utils"):
        if hasattr(sys.modules.get(name), "DEFAULT_TEMP_DIR"):  # put Gradio's copies back afterwards
            monkeypatch.setattr(sys.modules[name], "DEFAULT_TEMP_DIR", sys.modules[name].DEFAULT_TEMP_DIR)
    (tmp_path / "ws" / "tmp").mkdir(parents=True)
    os.chmod(tmp_path / "ws" / "tmp", 0o755)  # made by an older version: tightened
    folder = uploads.use_workspace_folder(tmp_path / "ws")
    assert folder == (tmp_path / "ws" / "tmp" / "gradio").resolve()
    assert os.environ["GRADIO_TEMP_DIR"] == str(folder) and uploads.upload_folder() == folder
    assert _mode(folder) == 0o700 and _mode(folder.parent) == 0o700
    src = tmp_path / "export.jsonl"
    src.write_text("{}\n")
    os.chmod(src, 0o644)
    copy = Path(uploads.download_copy(src))
    assert folder in copy.parents and _mode(copy) == 0o600 and _mode(copy.parent) == 0o700


def test_tab_handlers_refuse_before_reading(workspace, tmp_path, monkeypatch):
    """The Knowledge and Dataset tabs' file handlers, called as a web event would call them,
    refuse an outside path before the service sees it."""
    import gradio as gr
    from gradio.context import LocalContext

    from tuning import open_curation
    from ui.dataset_tab import build_dataset_tab
    from ui.knowledge_tab import build_knowledge_tab
    from ui.uploads import NotUploaded

    class FakeKnowledge:
        last_check = None
        added: list = []

        def documents(self):
            return []

        def stats(self):
            return {"documents": 0, "chunks": 0, "index_kind": None, "embedding_model": "x", "min_score": 0.0}

        def add_file(self, path, **kwargs):
            self.added.append(path)

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps({"prompt": SECRET, "completion": SECRET}) + "\n")
    kb, curation = FakeKnowledge(), open_curation(workspace)
    with gr.Blocks() as demo:
        build_knowledge_tab(kb)
        build_dataset_tab(curation)
    fns = {f.api_name: f.fn for f in (demo.fns.values() if isinstance(demo.fns, dict) else demo.fns)}

    class FakeBlocks:
        upload_file_set: set = set()

    token = LocalContext.blocks.set(FakeBlocks())
    try:
        for api_name, args in {
            "knowledge_add_files": ([str(secret)],),
            "knowledge_add_folder": ([str(secret)],),
            "dataset_import": (str(secret), ""),
        }.items():
            with pytest.raises(NotUploaded, match="not uploaded to this server"):
                fns[api_name](*args, progress=lambda *a, **k: None)
    finally:
        LocalContext.blocks.reset(token)
    assert kb.added == [] and curation.store.count() == 0
