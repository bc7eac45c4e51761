"""The tune/jobs/adapters commands end to end (the `accelerate launch` command and its config:
tests/tuning/test_distributed_config.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tuning.config import dpo_defaults

REPO_ROOT = Path(__file__).resolve().parents[2]


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
