"""Which of a job's training processes this is, and what the processes of one job agree on.

Under `accelerate launch` (tuning/launch.py) torchrun starts one process per rank, each with
RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE set; without it these read as a lone rank 0.
The worker (tuning/worker.py) lets rank 0 alone write progress, rows and the adapter.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def launched() -> bool:
    """Started by torchrun (under `accelerate launch`), which sets LOCAL_RANK for each rank."""
    return "LOCAL_RANK" in os.environ


def rank_threads(threads: int) -> int:
    """This rank's share of the job's thread budget: the processes of one machine split it
    (two processes each using every core slowed each other 5-10x, DESIGN.md)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, threads // max(1, local))


def die_with_launcher() -> None:
    """Ask Linux to kill this rank when its parent (the launcher) dies. torchrun starts each rank
    in a session of its own, so a SIGKILL of the job's process group reaches the launcher only;
    without this its ranks would go on training, and rank 0 could still publish."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the launcher died before the request was made
        os._exit(1)


def agree(flag: bool, device) -> bool:
    """Whether any rank has `flag` set (every rank calls this at the same point); `flag` alone
    without several processes."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return flag
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def signalled_pid(job_dir: Path) -> int:
    """The pid a cancel signals: under `accelerate launch` the launcher (rank 0's parent, the
    process the job manager started: SIGTERM to it reaches every rank through torchrun),
    else this process."""
    from .processes import is_our_worker

    parent = os.getppid()
    return parent if launched() and is_our_worker(parent, job_dir) else os.getpid()


def report_rank(trainer, strategy: str) -> None:
    """One line per rank in worker.log: which rank of how many, on what backend."""
    import torch.distributed as dist

    if not launched():
        return
    device = trainer.args.device  # first: reading it sets up the process group
    backend = dist.get_backend() if dist.is_available() and dist.is_initialized() else "none"
    print(
        f"tuning.worker: rank {os.environ.get('RANK')} of {os.environ.get('WORLD_SIZE')} "
        f"(local {os.environ.get('LOCAL_RANK')}), {strategy} over {backend} on {device}",
        flush=True,
    )


def gather_sharded(trainer, finetune: str, job_dir: Path) -> Path:
    """Every rank: save the trained weights whole into JOB/final (the Trainer gathers FSDP's
    full state dict or ZeRO-3's 16-bit weights onto rank 0, which writes). Returns the folder."""
    folder = job_dir / "final"
    trainer.save_model(str(folder))
    if finetune == "full" and is_main_process() and not any(folder.glob("*.safetensors")):
        raise RuntimeError(f"the gathered model in {folder} has no safetensors weights")
    return folder
