"""Starting a job's worker process.

A job runs in its own process, `python -m tuning.worker JOB_DIR` (under `accelerate launch`
for several processes, GPUs or machines), started in a new session so that a crash, an
out-of-memory kill or a closed browser never takes the app down, and so that a cancel can
signal the worker's whole process group. The command names the module, never a file of a
checkout, and no PYTHONPATH is set: the worker imports Tailor from wherever this interpreter
does (an editable checkout or site-packages after `pip install .`). It runs in its job folder,
so nothing in the directory the app was started from can shadow the installed packages.

Several processes: the job's whole launch set-up is written into its folder as accelerate's
own config file, JOB/accelerate.yaml (plus JOB/deepspeed.json for DeepSpeed), and the command
is `accelerate launch --config_file JOB/accelerate.yaml -m tuning.worker JOB`. So the folder
says how the job ran, and another machine of a multi-node job joins with the same file and its
own `--machine_rank` (`join_command`). The YAML keys are those of the installed accelerate's
ClusterConfig (accelerate/commands/config/config_args.py), and the tests load the file with
accelerate's own loader and launch parser.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from assistant.errors import ValidationError
from assistant.workspace import write_atomic

from .config import SHARDED, TrainConfig, resolve_hardware

WORKER_MODULE = "tuning.worker"
ACCELERATE_CONFIG = "accelerate.yaml"
DEEPSPEED_CONFIG = "deepspeed.json"
DEFAULT_PORT = 29500  # torch.distributed's usual port, for machines that must agree on one
DEEPSPEED_INSTALL = "pip install 'tailor[deepspeed]' (or: pip install deepspeed==0.19.8)"


def worker_command(job_dir: Path | str, config: TrainConfig | None = None) -> list[str]:
    """The command line of a job's worker: this interpreter with `-m tuning.worker JOB_DIR`,
    or `accelerate launch --config_file JOB_DIR/accelerate.yaml` of the same module when the
    config asks for several processes or a sharded strategy. The config files must already be
    written (`prepare_launch` does both)."""
    if config is None or config.strategy == "none":
        return [sys.executable, "-m", WORKER_MODULE, str(job_dir)]
    return accelerate_command(job_dir)


def prepare_launch(job_dir: Path | str, config: TrainConfig) -> list[str]:
    """Check that this machine can run the job's strategy, write its accelerate (and DeepSpeed)
    config into the job folder, and return the command that starts its worker."""
    if config.strategy == "none":
        return worker_command(job_dir)
    device, dtype = launch_hardware(config)
    check_launch(config, device)
    write_launch_files(job_dir, config, device=device, dtype=dtype)
    return worker_command(job_dir, config)


def launch_hardware(config: TrainConfig) -> tuple[str, str]:
    """(device, compute dtype) the job's processes will use here: tuning/config.py's choice,
    the one the worker makes too (bf16 on GPUs that support it)."""
    hw = resolve_hardware(config, default_thread_count=1)
    return hw.device, hw.dtype


def check_launch(config: TrainConfig, device: str) -> None:
    """Refuse, saying what to do instead, a strategy that cannot run on `device` here."""
    strategy = config.strategy
    if strategy == "none":
        return
    if strategy in SHARDED and device != "cuda":
        raise ValidationError(
            f"distributed {strategy} shards the model over GPUs, and this machine trains on {device}: "
            "use distributed ddp (several CPU processes, gloo) or none"
        )
    if strategy.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise ValidationError(f"distributed {strategy} needs DeepSpeed, which is not installed: {DEEPSPEED_INSTALL}")
    if device not in ("cpu", "cuda"):
        raise ValidationError(f"several training processes need CUDA GPUs or the CPU, not {device}")
    per_machine = config.num_processes // config.num_machines
    if device == "cuda":
        import torch

        gpus = torch.cuda.device_count()
        if per_machine > gpus:
            raise ValidationError(
                f"{per_machine} processes per machine need one GPU each, and this machine has {gpus}: "
                f"set num_processes to at most {gpus * config.num_machines}"
            )


def mixed_precision(dtype: str) -> str:
    """accelerate's name for a compute dtype."""
    return {"bfloat16": "bf16", "float16": "fp16"}.get(dtype, "no")


def accelerate_config(config: TrainConfig, job_dir: Path | str, *, device: str, dtype: str) -> dict:
    """The contents of JOB/accelerate.yaml (accelerate's ClusterConfig keys).

    - ddp on GPUs is accelerate's MULTI_GPU (torchrun, NCCL). On CPUs it is MULTI_GPU too, with
      use_cpu: accelerate's MULTI_CPU type starts only one process unless mpirun is set up,
      while MULTI_GPU's launcher (torchrun) starts them all; each then sets up gloo, as the
      worker's TrainingArguments(use_cpu=True) make accelerate pick gloo on a CPU.
    - fsdp is FSDP2 (per-parameter sharding, which handles LoRA's frozen and trainable weights
      side by side), each transformer block wrapped, full state dicts on save (rank 0
      gathers them: the adapter it publishes is whole).
    - DeepSpeed reads its settings from JOB/deepspeed.json alone; accelerate refuses a config
      that also sets mixed_precision, so bf16/fp16 are "auto" in the JSON, which transformers
      fills from the worker's TrainingArguments (the same choice as mixed_precision here).
    """
    strategy = config.strategy
    machines = config.num_machines
    port = config.main_process_port or (DEFAULT_PORT if machines > 1 else 0)  # 0: a free port on one machine
    data: dict = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "num_processes": config.num_processes,
        "num_machines": machines,
        "machine_rank": 0,
        "main_process_port": port,
        "main_training_function": "main",
        "rdzv_backend": "static",  # machine 0's address and port are the rendezvous (torchrun's static)
        "use_cpu": device == "cpu",
        "gpu_ids": "all",
    }
    if machines > 1:
        data["main_process_ip"] = config.main_process_ip
    if strategy == "ddp":
        data.update(distributed_type="MULTI_GPU", mixed_precision=mixed_precision(dtype))
    elif strategy == "fsdp":
        data.update(
            distributed_type="FSDP",
            mixed_precision=mixed_precision(dtype),
            fsdp_config={
                "fsdp_version": 2,
                "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # the model's _no_split_modules
                "fsdp_reshard_after_forward": True,  # ZeRO-3-like: weights gathered per block
                "fsdp_state_dict_type": "FULL_STATE_DICT",
                "fsdp_offload_params": False,
                "fsdp_cpu_ram_efficient_loading": False,  # every rank loads the base itself
                "fsdp_activation_checkpointing": False,  # the Trainer's gradient checkpointing instead
            },
        )
    elif strategy.startswith("deepspeed"):
        deepspeed: dict = {
            "deepspeed_config_file": str(Path(job_dir).resolve() / DEEPSPEED_CONFIG),
            # the worker loads the base before TrainingArguments exist, so ZeRO-3's sharded
            # init could not apply: each rank loads it whole, DeepSpeed then partitions it
            "zero3_init_flag": False,
        }
        if machines > 1:
            deepspeed["deepspeed_multinode_launcher"] = "standard"  # one launch per machine, like ddp
        data.update(distributed_type="DEEPSPEED", deepspeed_config=deepspeed)
    else:
        raise ValidationError(f"no accelerate config for distributed {strategy}")
    return data


def deepspeed_config(stage: int) -> dict:
    """JOB/deepspeed.json for ZeRO stage 2 or 3. "auto" values are filled by transformers from
    the TrainingArguments (batch sizes, accumulation, clipping, bf16/fp16, bucket sizes from the
    model's hidden size); no optimizer or scheduler here, so the Trainer's own are used."""
    zero: dict = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": "auto"}
    if stage == 3:
        zero.update(
            stage3_prefetch_bucket_size="auto",
            stage3_param_persistence_threshold="auto",
            # the adapter (or model) rank 0 publishes must be whole, not rank 0's shard
            stage3_gather_16bit_weights_on_model_save=True,
        )
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
    }


def write_launch_files(job_dir: Path | str, config: TrainConfig, *, device: str, dtype: str) -> Path:
    """Write JOB/accelerate.yaml (and JOB/deepspeed.json for DeepSpeed), each atomically, and
    return the YAML's path."""
    import yaml

    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    if config.strategy.startswith("deepspeed"):
        stage = 3 if config.strategy.endswith("3") else 2
        write_atomic(job_dir / DEEPSPEED_CONFIG, json.dumps(deepspeed_config(stage), indent=2) + "\n")
    data = accelerate_config(config, job_dir, device=device, dtype=dtype)
    path = job_dir / ACCELERATE_CONFIG
    write_atomic(path, "# written by Tailor for this job (tuning/launch.py)\n" + yaml.safe_dump(data, sort_keys=True))
    return path


def _accelerate() -> str:
    candidate = Path(sys.executable).parent / "accelerate"  # the one beside this interpreter
    return str(candidate) if candidate.exists() else "accelerate"


def accelerate_command(job_dir: Path | str, *, machine_rank: int | None = None) -> list[str]:
    """`accelerate launch --config_file JOB/accelerate.yaml [--machine_rank N] -m tuning.worker JOB`:
    everything else is in the file, so every machine runs the same command but for its rank."""
    job_dir = Path(job_dir)
    cmd = [_accelerate(), "launch", "--config_file", str(job_dir / ACCELERATE_CONFIG)]
    if machine_rank is not None:
        cmd += ["--machine_rank", str(machine_rank)]
    return cmd + ["-m", WORKER_MODULE, str(job_dir)]


def join_command(job_dir: Path | str, config: TrainConfig, machine_rank: int) -> list[str]:
    """What machine `machine_rank` (1 .. num_machines-1) of a multi-node job runs, with the
    workspace at the same path (a shared folder) and Tailor installed: the job's own launch is
    machine 0."""
    if not 1 <= machine_rank < config.num_machines:
        raise ValidationError(f"machine_rank must be between 1 and {config.num_machines - 1} (machine 0 is the job's)")
    return accelerate_command(Path(job_dir).resolve(), machine_rank=machine_rank)


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
