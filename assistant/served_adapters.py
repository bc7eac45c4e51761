"""Adapters that a client registered at run time, by folder path, rather than published into
this workspace: what `POST /v1/load_lora_adapter {"lora_name", "lora_path"}` loads (the route
vLLM has for the same thing), so that another Tailor can use this one as its engine
(assistant/remote_engine.py) and have its own adapters served here under their names.

They are offered beside the workspace's adapters (ChatService.models) and routed like them, but
never written into the workspace: the folder stays where the client keeps it, and a restart
forgets them (the client registers them again, as it must with vLLM)."""

from __future__ import annotations

import threading
from pathlib import Path

from .adapters import AdapterCatalog, check_adapter_name, folder_kind
from .engine import ChatEngine, require_safetensors
from .errors import NotFoundError, ValidationError


def _version(folder: Path) -> str:
    """Changes whenever the folder's files are rewritten: the engine reloads the adapter then."""
    stamps = [p.stat().st_mtime_ns for p in sorted(folder.iterdir()) if p.suffix in (".json", ".safetensors")]
    return f"{folder}@{max(stamps, default=0)}"


class ServedAdapters:
    def __init__(self, engine: ChatEngine, catalog: AdapterCatalog):
        self.engine = engine
        self.catalog = catalog
        self._folders: dict[str, tuple[Path, str]] = {}  # name -> (folder, version)
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._folders)

    def get(self, name: str) -> tuple[Path, str] | None:
        with self._lock:
            return self._folders.get(name)

    def load(self, name: str, path: str, replace: bool = False) -> None:
        """Load the LoRA adapter in folder `path` into the engine under `name`. Refuses a name
        already taken (unless `replace`), a name of this workspace's own adapters, and a path
        that is not a LoRA adapter folder with safetensors weights."""
        check_adapter_name(name)
        if not isinstance(path, str) or not path.strip():
            raise ValidationError("lora_path must be the path of a LoRA adapter folder on this server")
        folder = Path(path).expanduser()
        if not folder.is_absolute():
            raise ValidationError(f"lora_path must be an absolute path on this server, not {path!r}")
        if not folder.is_dir():
            raise ValidationError(f"lora_path {path!r} is not a folder on this server")
        if folder_kind(folder) != "lora":
            raise ValidationError(
                f"lora_path {path!r} is not a LoRA adapter folder: it has no adapter_config.json (PEFT's format)"
            )
        require_safetensors(folder, "adapter")
        if name in self.catalog.names():
            raise ValidationError(
                f"{name!r} is an adapter of this server's own workspace; register it under another name"
            )
        with self._lock:
            if name in self._folders and not replace:
                raise ValidationError(
                    f"The lora adapter {name!r} has already been loaded. If you want to load the adapter in place, "
                    "set 'load_inplace' to true."
                )
            version = _version(folder)
            self.engine.load_adapter(name, folder, version=version)  # ModelError: the weights do not fit the model
            self._folders[name] = (folder, version)

    def unload(self, name: str) -> None:
        with self._lock:
            if name not in self._folders:
                raise NotFoundError(f"The lora adapter {name!r} cannot be found.")
            self.engine.unload_adapter(name)
            del self._folders[name]
