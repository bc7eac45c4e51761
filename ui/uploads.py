"""Which files the web app may read, and where its uploads and downloads live.

A web event that takes files (gr.File and friends) receives a `FileData` whose `path` the
client wrote. Gradio checks in `processing_utils._check_allowed` that the path is inside its
upload folder, but only once `Blocks.has_launched` is true, and only `Blocks.launch()` sets
it: in an app mounted with `gr.mount_gradio_app` (ours) the check is skipped, and Gradio
copies *any* server file the request names into its cache before the handler runs. So:

- `enforce_upload_check(demo)` turns Gradio's own check on for every event of the app
  (preprocessing then accepts only files inside the upload folder, resolved, links followed);
- `uploaded_path` / `uploaded_paths`, called by each handler before it reads a file, check it
  again (defence in depth): inside the upload folder after `os.path.realpath`, no link on the
  way, a regular file, and one this server received through its upload route (Gradio records
  those in `Blocks.upload_file_set`). Anything else is refused with a message that says so;
- `use_workspace_folder(root)` keeps Gradio's upload and cache folder in the workspace
  (`<workspace>/tmp/gradio`, mode 0700), not in the system temp folder where every local user
  could read the uploads; `download_copy` puts files offered for download there too, 0600.

Direct Python calls of a handler (tests, scripts in the same process) are not web requests:
outside a Gradio event the handler-level check lets any path through."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Collection
from pathlib import Path

import gradio as gr

UPLOAD_SUBFOLDER = Path("tmp") / "gradio"
_DIR_MODE, _FILE_MODE = 0o700, 0o600


class NotUploaded(gr.Error):
    """A handler was given a file that this server did not receive as an upload."""


# ---- where Gradio keeps files ----------------------------------------------------------------
def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
    if stat.S_IMODE(path.stat().st_mode) != _DIR_MODE:
        os.chmod(path, _DIR_MODE)
    return path


def use_workspace_folder(workspace_root: Path | str) -> Path:
    """Point Gradio's upload/cache folder (GRADIO_TEMP_DIR) at `<workspace>/tmp/gradio`,
    created 0700 (and `tmp/` too). Call before any component is created: each component reads
    the folder when it is constructed (`Block.GRADIO_CACHE`), the upload route when the app is
    mounted. A few Gradio modules read GRADIO_TEMP_DIR once, when gradio is imported (the
    `vibe_edit_history` folder that mounting creates, screen recordings); gradio is imported
    before the workspace is known, so their copies are updated here as well."""
    root = Path(workspace_root).expanduser().resolve()
    _private_dir(root / UPLOAD_SUBFOLDER.parent)
    folder = _private_dir(root / UPLOAD_SUBFOLDER)
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    for name in ("gradio.route_utils", "gradio.routes", "gradio.mcp", "gradio.screen_recording_utils"):
        module = sys.modules.get(name)
        if module is not None and isinstance(getattr(module, "DEFAULT_TEMP_DIR", None), str):
            module.DEFAULT_TEMP_DIR = str(folder)
    return folder


def upload_folder() -> Path:
    """The folder Gradio writes uploads to (what GRADIO_TEMP_DIR says, or its default)."""
    from gradio.utils import get_upload_folder

    return Path(os.path.realpath(get_upload_folder()))


def enforce_upload_check(demo: gr.Blocks) -> gr.Blocks:
    """Make Gradio's own "was this file uploaded?" check run for every event of `demo`
    although it is mounted rather than launched (see the module docstring). `has_launched` is
    read nowhere else in Gradio 6 (checked in 6.31: processing_utils._check_allowed only)."""
    demo.has_launched = True
    return demo


# ---- the handler-level check -----------------------------------------------------------------
def _raw_path(value) -> str:
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, dict) and isinstance(value.get("path"), str) and value["path"]:
        return value["path"]
    for attr in ("path", "name"):  # FileData, gradio's NamedString / tempfile wrappers
        got = getattr(value, attr, None)
        if isinstance(got, str) and got:
            return got
    raise NotUploaded(f"Refused: {value!r} is not a file that was uploaded to this server.")


def _inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives, or one relative
        return False


def check_uploaded(value, folder: Path | str, uploaded: Collection[str] | None = None) -> str:
    """The path of `value` if it is a regular file inside `folder` that was uploaded there;
    raises NotUploaded otherwise. `uploaded`: the paths the server's upload route wrote (None:
    only the folder is checked). Links are refused even when they point inside the folder:
    Gradio never writes one, so one there was planted."""
    raw = _raw_path(value)
    name = os.path.basename(raw.rstrip("/\\")) or raw
    refused = NotUploaded(
        f"Refused: {name} was not uploaded to this server (only files sent with the upload "
        "button can be read; upload it again)."
    )
    folder_real = os.path.realpath(folder)
    lexical = os.path.abspath(raw)
    real = os.path.realpath(raw)
    # The path as written (normalised: `..` that leaves the folder is out) must lie in the
    # folder, resolving it must not move it (no link anywhere on the way), and it must be a
    # plain file.
    folder_abs = os.path.abspath(folder)
    written_inside = next((f for f in (folder_real, folder_abs) if _inside(lexical, f) and lexical != f), None)
    if written_inside is None or not _inside(real, folder_real) or real == folder_real:
        raise refused
    if os.path.relpath(real, folder_real) != os.path.relpath(lexical, written_inside):
        raise refused
    try:
        st = os.lstat(real)
    except OSError:
        raise refused from None
    if not stat.S_ISREG(st.st_mode):
        raise refused
    if uploaded is not None and lexical not in uploaded and real not in uploaded:
        # The upload route stores absolute, normalised paths; compare normalised copies too
        # (tuple(): a snapshot, the route may add to the set meanwhile).
        if not any(os.path.abspath(p) in (lexical, real) for p in tuple(uploaded)):
            raise refused
    _tighten(real, folder_real)
    return real


def _tighten(path: str, folder_real: str) -> None:
    """Uploads are private: the file 0600, the folders between it and the upload folder 0700
    (Gradio creates them with the process umask). Best effort: a file owned by someone else
    is left as it is."""
    try:
        if stat.S_IMODE(os.lstat(path).st_mode) & 0o077:
            os.chmod(path, _FILE_MODE)
        parent = os.path.dirname(path)
        while parent != folder_real and _inside(parent, folder_real):
            if stat.S_IMODE(os.lstat(parent).st_mode) != _DIR_MODE:
                os.chmod(parent, _DIR_MODE)
            parent = os.path.dirname(parent)
    except OSError:
        pass


def _current_blocks():
    try:
        from gradio.context import LocalContext
    except ImportError:  # pragma: no cover - gradio moved it
        return None
    return LocalContext.blocks.get(None)


def uploaded_path(value) -> str:
    """For a handler: the path of one file input, checked when the call is a web event (see
    check_uploaded). Outside an event (a direct Python call) the path is returned as given."""
    blocks = _current_blocks()
    if blocks is None:
        return _raw_path(value)
    uploaded = getattr(blocks, "upload_file_set", None)
    return check_uploaded(value, upload_folder(), uploaded if isinstance(uploaded, (set, frozenset)) else None)


def uploaded_paths(values) -> list[str]:
    """uploaded_path for a list input (None or one value also accepted). One refused file
    refuses the whole call: such a request did not come from the upload button."""
    if not values:
        return []
    values = values if isinstance(values, (list, tuple)) else [values]
    return [uploaded_path(v) for v in values]


# ---- files offered for download --------------------------------------------------------------
def download_copy(path: Path | str, prefix: str = "tailor-export-") -> str:
    """A private copy of `path` (a folder becomes a .zip) for a gr.File / gr.DownloadButton
    output: in a fresh 0700 folder inside Gradio's (workspace) upload folder, mode 0600, so
    Gradio serves it without copying it again and no other local user can read it."""
    path = Path(path)
    root = upload_folder()  # made 0700 by use_workspace_folder; not chmod-ed here (it may be shared)
    root.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=root))  # mkdtemp: mode 0700
    if path.is_dir():
        dest = Path(shutil.make_archive(str(folder / path.name), "zip", root_dir=path))
    else:
        dest = Path(shutil.copyfile(path, folder / path.name))
    os.chmod(dest, _FILE_MODE)
    return str(dest)
