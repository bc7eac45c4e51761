"""Device, dtype and thread choices from the hardware.

Why this matters: on CPUs without bf16 kernels a bf16 matmul ran 10-300x slower than fp32
(measured on the 2-core development machines), so bf16 is only chosen where a GPU supports it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass(frozen=True)
class Hardware:
    device: str
    dtype: torch.dtype

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def describe(self) -> str:
        if self.device == "cuda":
            return f"cuda ({torch.cuda.get_device_name(0)}), {self.dtype_name}"
        return f"{self.device}, {self.dtype_name}, {torch.get_num_threads()} threads"


def pick_hardware(device: str | None = None, dtype: str | None = None) -> Hardware:
    if device is None:
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if dtype is not None:
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16")
        return Hardware(device, _DTYPES[dtype])
    if device == "cuda" and torch.cuda.is_bf16_supported():
        return Hardware(device, torch.bfloat16)
    if device == "cuda":
        return Hardware(device, torch.float16)
    return Hardware(device, torch.float32)


def set_threads(threads: int | None) -> None:
    """Give this process its own thread budget: two processes that each use every core slow
    each other 5-10x (a training job beside a chat)."""
    if threads:
        torch.set_num_threads(max(1, threads))


def available_memory(device: str = "cpu") -> int | None:
    """Bytes free for a new model on `device`: the GPU's free memory on cuda, else the memory
    the OS says a process can still take without swapping (MemAvailable). None: unknown."""
    if device == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info()
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - unknown memory: callers skip their check
        return None


def gigabytes(n: float) -> str:
    return f"{n / 1e9:.1f} GB"
