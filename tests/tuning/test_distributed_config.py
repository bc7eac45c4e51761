"""The distributed settings of a training job: TrainConfig's checks, the accelerate (and
DeepSpeed) config written into the job folder, read back by the installed accelerate's own
loader and launch parser, the launch command, the refusals on this machine, the CLI flags, and
the worker's per-rank helpers. No training here (tests/tuning/test_distributed_gloo.py runs it)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

from assistant.errors import ValidationError
from tuning.config import TrainConfig, cpu_has_fast_bf16
from tuning.launch import (
    ACCELERATE_CONFIG,
    DEEPSPEED_CONFIG,
    accelerate_command,
    check_launch,
    join_command,
    prepare_launch,
    worker_command,
    write_launch_files,
)


def _launch_args(cmd):
    """`accelerate launch`'s own reading of a command (its parser, then the config file's
    defaults), as the launcher would run it."""
    assert cmd[1] == "launch" and cmd[-3:-1] == ["-m", "tuning.worker"]
    args = launch_command_parser().parse_args(cmd[2:])
    args, defaults, _ = _validate_launch_command(args)
    return args, defaults


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(distributed="none", num_processes=2), "distributed none runs one process"),
        (dict(distributed="ddp"), "ddp needs num_processes of 2 or more"),
        (dict(distributed="zero"), "distributed must be one of"),
        (dict(num_processes=3, num_machines=2, main_process_ip="10.0.0.1"), "cannot be split evenly over 2"),
        (dict(num_processes=4, num_machines=2), "several machines need main_process_ip"),
        (dict(num_processes=2, main_process_port=70000), "main_process_port must be"),
        (dict(num_processes=0), "num_processes must be >= 1"),
    ],
)
def test_config_refuses_impossible_layouts(settings, message):
    with pytest.raises(ValidationError, match=message):
        TrainConfig.from_dict(settings)


def test_auto_is_ddp_for_several_processes_and_one_process_runs_without_a_launcher(tmp_path):
    assert TrainConfig().strategy == "none" and TrainConfig(num_processes=2).strategy == "ddp"
    assert TrainConfig(distributed="fsdp").strategy == "fsdp"  # one GPU may shard too (offload)
    assert worker_command(tmp_path, TrainConfig()) == [sys.executable, "-m", "tuning.worker", str(tmp_path)]
    assert prepare_launch(tmp_path, TrainConfig()) == [sys.executable, "-m", "tuning.worker", str(tmp_path)]
    assert not (tmp_path / ACCELERATE_CONFIG).exists()


def test_cpu_ddp_config_starts_two_torchrun_processes(tmp_path):
    cmd = prepare_launch(tmp_path, TrainConfig(num_processes=2))  # this machine: a CPU
    assert cmd[1:4] == ["launch", "--config_file", str(tmp_path / ACCELERATE_CONFIG)]
    assert cmd[-3:] == ["-m", "tuning.worker", str(tmp_path)]
    cfg = load_config_from_file(str(tmp_path / ACCELERATE_CONFIG))
    assert cfg.distributed_type == "MULTI_GPU" and cfg.use_cpu and cfg.num_processes == 2
    args, _ = _launch_args(cmd)
    # MULTI_GPU's launcher is torchrun (MULTI_CPU would start one process without mpirun)
    assert args.multi_gpu and not args.cpu and args.num_processes == 2
    # bf16 autocast only on a CPU with bf16 matrix instructions (AMX, AVX512-BF16), as one process
    assert args.mixed_precision == ("bf16" if cpu_has_fast_bf16() else "no")
    prepare_multi_gpu_env(args)
    assert args.nproc_per_node == "2" and args.main_process_port > 0  # 0 in the file: a free port now


def test_fsdp_config_on_gpus_with_bf16(tmp_path):
    config = TrainConfig(num_processes=4, distributed="fsdp")
    write_launch_files(tmp_path, config, device="cuda", dtype="bfloat16")
    cmd = accelerate_command(tmp_path)
    args, defaults = _launch_args(cmd)
    assert defaults.distributed_type == "FSDP" and not defaults.use_cpu
    assert args.use_fsdp and args.mixed_precision == "bf16" and args.num_processes == 4
    parser_options = set(vars(launch_command_parser().parse_args(["x"])))
    assert set(defaults.fsdp_config) <= parser_options  # every key is one the launcher reads
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT" and env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_config_file_and_its_json(tmp_path, stage):
    from accelerate.utils.deepspeed import HfDeepSpeedConfig

    config = TrainConfig(num_processes=2, distributed=f"deepspeed-zero{stage}")
    write_launch_files(tmp_path, config, device="cuda", dtype="bfloat16")
    args, defaults = _launch_args(accelerate_command(tmp_path))
    assert defaults.distributed_type == "DEEPSPEED" and args.use_deepspeed
    assert args.deepspeed_config_file == str(tmp_path.resolve() / DEEPSPEED_CONFIG)
    # accelerate refuses a DeepSpeed file beside mixed_precision in its own config: bf16 is the JSON's
    assert defaults.mixed_precision is None and args.mixed_precision == "no"
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
    _, env = prepare_deepspeed_cmd_env(args)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["ACCELERATE_DEEPSPEED_CONFIG_FILE"].endswith(
        DEEPSPEED_CONFIG
    )
    assert "mixed_precision" not in env["ACCELERATE_CONFIG_DS_FIELDS"]
    ds = HfDeepSpeedConfig(str(tmp_path / DEEPSPEED_CONFIG))
    assert ds.get_value("zero_optimization.stage") == stage and ds.is_zero3() == (stage == 3)
    raw = json.loads((tmp_path / DEEPSPEED_CONFIG).read_text())
    assert raw["bf16"] == {"enabled": "auto"} and raw["train_micro_batch_size_per_gpu"] == "auto"
    assert raw["zero_optimization"].get("stage3_gather_16bit_weights_on_model_save", False) == (stage == 3)


def test_multi_node_config_and_the_other_machines_command(tmp_path):
    config = TrainConfig(num_processes=8, num_machines=2, main_process_ip="10.0.0.1")
    write_launch_files(tmp_path, config, device="cuda", dtype="bfloat16")
    defaults = load_config_from_file(str(tmp_path / ACCELERATE_CONFIG))
    assert defaults.main_process_ip == "10.0.0.1" and defaults.main_process_port == 29500
    assert defaults.machine_rank == 0 and defaults.num_machines == 2
    join = join_command(tmp_path, config, 1)
    assert join[join.index("--machine_rank") + 1] == "1"
    args, _ = _launch_args(join)
    assert args.machine_rank == 1 and args.num_machines == 2  # the flag over the file's rank 0
    prepare_multi_gpu_env(args)
    assert (args.nnodes, args.node_rank, args.nproc_per_node) == ("2", 1, "4")
    assert args.rdzv_endpoint == "10.0.0.1:29500" and args.rdzv_backend == "static"
    for bad in (0, 2):
        with pytest.raises(ValidationError, match="between 1 and 1"):
            join_command(tmp_path, config, bad)


def test_this_machine_refuses_what_it_cannot_run(monkeypatch):
    with pytest.raises(ValidationError, match="shards the model over GPUs, and this machine trains on cpu"):
        check_launch(TrainConfig(num_processes=2, distributed="fsdp"), "cpu")
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(
        ValidationError, match=r"needs DeepSpeed, which is not installed: pip install 'tailor\[deepspeed\]'"
    ):
        check_launch(TrainConfig(num_processes=2, distributed="deepspeed-zero2"), "cuda")
    with pytest.raises(ValidationError, match="4 processes per machine need one GPU each, and this machine has 0"):
        check_launch(TrainConfig(num_processes=4), "cuda")  # no GPU here
    with pytest.raises(ValidationError, match="CUDA GPUs or the CPU, not mps"):
        check_launch(TrainConfig(num_processes=2), "mps")
    check_launch(TrainConfig(num_processes=2), "cpu")  # ddp over gloo: fine


def test_manager_refuses_before_queueing_and_launches_with_the_job_config(
    tune_manager, tiny_model_dir, tune_version_dir, tune_helpers
):
    with pytest.raises(ValidationError, match="shards the model over GPUs"):
        tune_helpers.submit(tune_manager, tiny_model_dir, tune_version_dir, num_processes=2, distributed="fsdp")
    assert tune_manager.list() == []  # nothing was queued
    job = tune_manager.submit(
        base_model="tiny",
        base_model_path=tiny_model_dir,
        dataset_version=1,
        dataset_path=tune_version_dir,
        config=TrainConfig(num_processes=2),
        start=False,
    )
    assert tune_manager.command(job)[1:4] == ["launch", "--config_file", str(job.job_dir / ACCELERATE_CONFIG)]
    tune_manager.cancel(job.id)


def test_cli_flags_over_the_config_file(tmp_path):
    from cli.main import build_parser
    from cli.tune_cmds import distributed_settings

    parser = build_parser()
    args = parser.parse_args(
        ["tune", "--processes", "4", "--distributed", "deepspeed-zero3", "--machines", "2", "--main-process-ip", "h0"]
    )
    flags = distributed_settings(args)
    assert flags == dict(num_processes=4, distributed="deepspeed-zero3", num_machines=2, main_process_ip="h0")
    assert TrainConfig(max_steps=3).with_(**flags).num_machines == 2
    assert distributed_settings(parser.parse_args(["tune"])) == {}  # nothing given: the file's settings stand
    with pytest.raises(SystemExit):
        parser.parse_args(["tune", "--distributed", "zero4"])


def test_worker_rank_helpers(monkeypatch):
    from tuning.ranks import agree, rank_threads

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert rank_threads(2) == 1 and rank_threads(1) == 1 and rank_threads(8) == 4
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert rank_threads(2) == 2
    assert agree(True, "cpu") and not agree(False, "cpu")  # one process: its own flag


CHILD = """
import os, sys, time
from tuning.ranks import die_with_launcher
die_with_launcher()
print(os.getpid(), flush=True)
time.sleep(60)
"""
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=sys.stdout)
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_a_rank_dies_with_its_launcher():
    """torchrun starts each rank in a session of its own: when the launcher is killed, the
    rank must go too (a cancel's SIGKILL reaches the launcher's group only)."""
    from tuning.processes import process_alive

    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert process_alive(child)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while process_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(child)
