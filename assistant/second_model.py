"""Full fine-tuned checkpoints in the chat: each is a whole model, so it cannot be hot-swapped
onto the base like a LoRA adapter; it is loaded as a second engine beside the base one, one
checkpoint at a time (picking another replaces it), after a memory check.

A second model always runs on the torch engine (fp32 on a CPU), whatever answers for the base:
llama.cpp would first need the checkpoint converted to GGUF (a minute and another copy on
disk for every published version). Its replies are therefore slower than the base's on a CPU,
and a side-by-side comparison with a llama.cpp base also differs by the base's quantization.
To run one at llama.cpp speed, export it as GGUF (Tune tab, or `tailor export gguf`)."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable

from .adapters import AdapterInfo
from .engine import ChatEngine
from .errors import ModelError
from .hardware import Hardware, available_memory, gigabytes
from .models import count_parameters

log = logging.getLogger(__name__)

LOAD_OVERHEAD = 300e6  # bytes beyond the weights: tokenizer, buffers, the first forward pass


def load_need(info: AdapterInfo, hardware: Hardware) -> float:
    """Bytes a checkpoint takes once loaded: its parameters in the hardware's dtype, plus a margin."""
    per_weight = 2 if hardware.dtype_name in ("bfloat16", "float16") else 4
    return count_parameters(info.path) * per_weight + LOAD_OVERHEAD


class SecondModels:
    """The full checkpoint loaded beside the base engine (at most one)."""

    def __init__(self, load: Callable[[AdapterInfo], ChatEngine], hardware: Hardware):
        self._load = load
        self.hardware = hardware
        self._lock = threading.Lock()
        self._loaded: tuple[str, str, ChatEngine] | None = None  # name, version, engine

    @property
    def loaded(self) -> str | None:
        return self._loaded[0] if self._loaded else None

    def engine_for(self, info: AdapterInfo) -> ChatEngine:
        with self._lock:
            if self._loaded and self._loaded[:2] == (info.name, info.version):
                return self._loaded[2]
            if self._loaded is not None:  # free the other checkpoint first: one at a time
                log.info("Unloading full checkpoint %s to load %s", self._loaded[0], info.name)
                self._loaded[2].close()
                self._loaded = None
                gc.collect()
            need, free = load_need(info, self.hardware), available_memory(self.hardware.device)
            if free is not None and need > free:
                raise ModelError(
                    f"Not enough memory to load the full checkpoint {info.name!r} beside the base model: it needs "
                    f"about {gigabytes(need)} and {gigabytes(free)} are free. Close other programs, use a LoRA "
                    "adapter, or export it and run it on its own."
                )
            log.info("Loading full checkpoint %s from %s as a second model", info.name, info.path)
            engine = self._load(info)
            self._loaded = (info.name, info.version, engine)
            return engine

    def close(self) -> None:
        with self._lock:
            if self._loaded is not None:
                self._loaded[2].close()
                self._loaded = None
