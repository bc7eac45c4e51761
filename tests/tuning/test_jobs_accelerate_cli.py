"""`accelerate launch` command construction, and the tune/jobs/adapters commands end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.errors import ValidationError
from tuning.config import dpo_defaults
from tuning.jobs import JobManager
from tuning.launch import accelerate_command

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_accelerate_command_for_several_gpus_and_machines(tmp_path):
    cmd = accelerate_command(tmp_path / "job-0001", 4, accelerate="accelerate")
    assert cmd == [
        "accelerate",
        "launch",
        "--num_processes",
        "4",
        "--num_machines",
        "1",
        "--multi_gpu",
        "-m",
        "tuning.worker",
        str(tmp_path / "job-0001"),
    ]
    cmd = accelerate_command(
        "J",
        16,
        num_machines=2,
        machine_rank=1,
        main_process_ip="10.0.0.1",
        main_process_port=29500,
        mixed_precision="bf16",
        accelerate="accelerate",
    )
    assert cmd[cmd.index("--machine_rank") + 1] == "1" and cmd[cmd.index("--main_process_ip") + 1] == "10.0.0.1"
    assert cmd[cmd.index("--main_process_port") + 1] == "29500" and cmd[cmd.index("--mixed_precision") + 1] == "bf16"
    assert cmd[-3:] == ["-m", "tuning.worker", "J"]
    with pytest.raises(ValidationError):
        accelerate_command("J", 2, num_machines=2)  # no main process address
    with pytest.raises(ValidationError):
        accelerate_command("J", 0)


def test_manager_uses_accelerate_for_several_processes(workspace, tiny_model_dir, tune_version_dir):
    from tuning.config import TrainConfig

    manager = JobManager(workspace)
    job = manager.submit(
        base_model="tiny",
        base_model_path=tiny_model_dir,
        dataset_version=1,
        dataset_path=tune_version_dir,
        config=TrainConfig(num_processes=2),
        start=False,
    )
    cmd = manager.command(job)
    assert cmd[1:3] == ["launch", "--num_processes"] and cmd[-2:] == ["tuning.worker", str(job.job_dir)]
    single = manager.submit(
        base_model="tiny", base_model_path=tiny_model_dir, dataset_version=1, dataset_path=tune_version_dir, start=False
    )
    assert manager.command(single) == [sys.executable, "-m", "tuning.worker", str(single.job_dir)]
    for j in (job, single):
        manager.cancel(j.id)


def tailor(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_cli_tune_wait_then_adapters_and_jobs(tmp_path, tiny_model_dir):
    ws = tmp_path / "ws"
    pairs = REPO_ROOT / "demo" / "lantern_bay" / "pairs.jsonl"
    small = tmp_path / "pairs.jsonl"
    small.write_text("".join(pairs.read_text().splitlines(keepends=True)[:30]))
    r = tailor("examples", "import", small, "--workspace", ws, "--model", tiny_model_dir)
    assert r.returncode == 0, r.stderr
    (tmp_path / "cfg.json").write_text(json.dumps({"max_steps": 3, "eval_steps": 1, "threads": 1, "max_length": 128}))
    r = tailor(
        "tune",
        "--config",
        tmp_path / "cfg.json",
        "--wait",
        "--json",
        "--name",
        "cli",
        "--workspace",
        ws,
        "--model",
        tiny_model_dir,
    )
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert job["status"] == "succeeded" and job["adapter_name"] == "cli-v1"
    assert "step 3/3" in r.stderr  # progress followed on stderr

    r = tailor("adapters", "list", "--json", "--workspace", ws)
    rows = json.loads(r.stdout)
    assert [(a["name"], a["active"]) for a in rows] == [("cli-v1", True)]
    assert rows[0]["dataset_version"] == str(job["dataset_version"])

    # Preference pairs: imported, listed, exported in TRL's format, and a DPO run that continues
    # the active adapter (cli-v1) publishes tailor-dpo-v1.
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(
        "".join(
            json.dumps({"prompt": f"Tip {i}?", "chosen": f"Oil the chain {i}.", "rejected": f"Well, hm, {i}..."}) + "\n"
            for i in range(12)
        )
    )
    r = tailor("examples", "import", prefs, "--workspace", ws, "--model", tiny_model_dir)
    assert r.returncode == 0 and "12 preference" in r.stdout, r.stdout + r.stderr
    r = tailor("examples", "list", "--kind", "pair", "--limit", "0", "--workspace", ws)
    assert r.stdout.count("rejected: Well, hm,") == 12
    r = tailor("examples", "export", tmp_path / "out.jsonl", "--format", "preference", "--workspace", ws)
    assert "Exported 12 preference pairs" in r.stdout and len((tmp_path / "out.jsonl").read_text().splitlines()) == 12
    r = tailor(
        "tune",
        "--method",
        "dpo",
        "--config",
        tmp_path / "cfg.json",
        "--wait",
        "--json",
        "--workspace",
        ws,
        "--model",
        tiny_model_dir,
    )
    assert r.returncode == 0, r.stderr
    dpo_job = json.loads(r.stdout)
    assert dpo_job["status"] == "succeeded" and dpo_job["adapter_name"] == "tailor-dpo-v1"
    card = {a["name"]: a for a in json.loads(tailor("adapters", "list", "--json", "--workspace", ws).stdout)}
    dpo = card["tailor-dpo-v1"]
    assert dpo["config"]["method"] == "dpo" and dpo["config"]["start_adapter"] == "cli-v1"
    assert (
        dpo["config"]["max_steps"] == 3 and dpo["config"]["learning_rate"] == dpo_defaults().learning_rate
    )  # file, then DPO defaults
    assert "reward_accuracy" in dpo["metrics"]
    r = tailor("tune", "--from", "nope", "--workspace", ws, "--model", tiny_model_dir)
    assert r.returncode == 2 and "nope" in r.stderr
    r = tailor("tune", "--beta", "0.2", "--method", "sft", "--workspace", ws, "--model", tiny_model_dir)
    assert r.returncode == 2 and "--method dpo" in r.stderr
    assert tailor("adapters", "delete", "tailor-dpo-v1", "--workspace", ws).returncode == 0
    assert tailor("adapters", "rename", "cli-v1", "voice", "--workspace", ws).returncode == 0
    assert tailor("adapters", "activate", "base", "--workspace", ws).returncode == 0
    r = tailor("jobs", "list", "--json", "--workspace", ws)
    assert json.loads(r.stdout)[0]["status"] == "succeeded"
    r = tailor("jobs", "resume", job["id"], "--workspace", ws)
    assert r.returncode == 2 and "only interrupted, failed or cancelled" in r.stderr
    r = tailor("adapters", "delete", "nope", "--workspace", ws)
    assert r.returncode == 2 and r.stderr.startswith("tailor: error:")
    assert tailor("adapters", "delete", "voice", "--workspace", ws).returncode == 0
    r = tailor("tune", "--config", tmp_path / "missing.json", "--workspace", ws, "--model", tiny_model_dir)
    assert r.returncode == 2
