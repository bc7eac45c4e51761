"""Starting a job's worker process.

A job runs in its own process, `python -m tuning.worker JOB_DIR` (under `accelerate launch`
for several GPUs or machines), started in a new session so that a crash, an out-of-memory
kill or a closed browser never takes the app down, and so that a cancel can signal the
worker's whole process group. The command names the module, never a file of a checkout, and
no PYTHONPATH is set: the worker imports Tailor from wherever this interpreter does (an
editable checkout or site-packages after `pip install .`). It runs in its job folder, so
nothing in the directory the app was started from can shadow the installed packages.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from assistant.errors import ValidationError

WORKER_MODULE = "tuning.worker"


def worker_command(job_dir: Path | str, num_processes: int = 1) -> list[str]:
    """The command line of a job's worker: this interpreter with `-m tuning.worker JOB_DIR`,
    or `accelerate launch` of the same module for several processes."""
    if num_processes > 1:
        return accelerate_command(job_dir, num_processes)
    return [sys.executable, "-m", WORKER_MODULE, str(job_dir)]


def accelerate_command(
    job_dir: Path | str,
    num_processes: int,
    *,
    num_machines: int = 1,
    machine_rank: int = 0,
    main_process_ip: str | None = None,
    main_process_port: int | None = None,
    mixed_precision: str | None = None,
    accelerate: str | None = None,
) -> list[str]:
    """The command line that runs a job on several GPUs (or machines) with `accelerate launch`:

        accelerate launch --num_processes 4 --num_machines 1 --multi_gpu -m tuning.worker JOB_DIR

    For several machines run it on each with its --machine_rank, the same --main_process_ip
    and --main_process_port, and a shared workspace folder. Only rank 0 writes progress and
    publishes the adapter."""
    if num_processes < 1 or num_machines < 1:
        raise ValidationError("num_processes and num_machines must be at least 1")
    if not 0 <= machine_rank < num_machines:
        raise ValidationError("machine_rank must be between 0 and num_machines - 1")
    if num_machines > 1 and not main_process_ip:
        raise ValidationError("several machines need main_process_ip (the address of machine 0)")
    if accelerate is None:
        candidate = Path(sys.executable).parent / "accelerate"
        accelerate = str(candidate) if candidate.exists() else "accelerate"
    cmd = [accelerate, "launch", "--num_processes", str(num_processes), "--num_machines", str(num_machines)]
    if num_processes > 1:
        cmd.append("--multi_gpu")
    if num_machines > 1:
        assert main_process_ip is not None  # checked above
        cmd += ["--machine_rank", str(machine_rank), "--main_process_ip", main_process_ip]
    if main_process_port:
        cmd += ["--main_process_port", str(main_process_port)]
    if mixed_precision:
        if mixed_precision not in ("no", "fp16", "bf16"):
            raise ValidationError("mixed_precision must be no, fp16 or bf16")
        cmd += ["--mixed_precision", mixed_precision]
    return cmd + ["-m", WORKER_MODULE, str(job_dir)]


def worker_env(workspace_root: Path | str, threads: int | str) -> dict[str, str]:
    """This process's environment, passed through, with the worker's workspace and its thread
    budget (`threads` for the BLAS and OpenMP pools)."""
    env = dict(os.environ)
    env.update(
        TAILOR_HOME=str(workspace_root),
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    return env


def start_worker(command: list[str], job_dir: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start `command` in `job_dir`, in a new session (its process group is its pid), its
    output appended to JOB_DIR/worker.log."""
    with open(job_dir / "worker.log", "ab") as out:
        return subprocess.Popen(
            command,
            cwd=str(job_dir),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
