"""`tailor eval` as a real subprocess on the tiny model."""

import json
import os
import subprocess
import sys
from pathlib import Path

from assistant.evidence import DEFAULT_MAX_SENTENCES
from assistant.prompting import (
    DEFAULT_ANSWER_FOLLOW,
    DEFAULT_ANSWER_HINT,
    DEFAULT_ANSWER_RANKING,
    DEFAULT_COPY_BIAS,
    DEFAULT_FOCUS_BIAS,
    DEFAULT_PENALIZE_SOURCES,
)

from .conftest import EVAL_LORA

REPO = Path(__file__).resolve().parents[2]


def tailor(*args):
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TAILOR_THREADS": "1"},
    )


def test_eval_prints_json_and_a_stored_run_can_be_shown(tiny_model_dir, facts_file, tmp_path, random_lora):
    ws = tmp_path / "ws"
    random_lora(tiny_model_dir, ws / "adapters" / "tiny-lora", **EVAL_LORA)
    r = tailor(
        "eval",
        "--arms",
        "base,tuned",
        "--rag",
        "off",
        "--set",
        facts_file,
        "--max-new-tokens",
        "8",
        "--no-source",
        "decline",
        "--system",
        "Be brief.",
        "--json",
        "--workspace",
        ws,
        "--model",
        tiny_model_dir,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["run"]["no_source"] == "decline"  # recorded with the run
    assert out["run"]["system_prompt"] == "Be brief."
    assert out["run"]["reading"] == {
        "evidence_sentences": DEFAULT_MAX_SENTENCES,
        "copy_bias": DEFAULT_COPY_BIAS,
        "penalize_sources": DEFAULT_PENALIZE_SOURCES,
        "answer_focus": DEFAULT_FOCUS_BIAS,
        "answer_hint": DEFAULT_ANSWER_HINT,
        "answer_ranking": DEFAULT_ANSWER_RANKING,
        "answer_follow": DEFAULT_ANSWER_FOLLOW,
    }
    assert out["run"]["engine"].split()[0] in {"llamacpp", "torch"}  # what made the replies
    assert [a["key"] for a in out["run"]["arms"]] == ["base", "tiny-lora"]
    assert out["run"]["status"] == "done" and out["run"]["items"] == 3
    assert out["table"]["header"][:2] == ["Arm", "n"] and len(out["table"]["rows"]) == 2
    fact = out["arms"]["tiny-lora"]["fact"]
    assert fact["n"] == 3 and fact["lo"] <= fact["mean"] <= fact["hi"]
    assert out["tests"] and out["tests"][0]["metric"] == "fact" and "permutation" in out["tests"][0]["method"]
    assert "3/3" in r.stderr or "6/6" in r.stderr  # progress

    shown = tailor("eval", "--show", out["run"]["id"], "--workspace", ws)
    assert shown.returncode == 0, shown.stderr
    assert out["run"]["id"] in shown.stdout and "Fact accuracy" in shown.stdout and "tiny-lora" in shown.stdout
    assert "Repeats itself" in shown.stdout  # every reply is checked for a repeated sentence

    # --paired: the paired tests on the metrics asked for, in that order, each with its own heading
    paired = tailor("eval", "--show", out["run"]["id"], "--paired", "repeats,words", "--json", "--workspace", ws)
    assert paired.returncode == 0, paired.stderr
    assert [t["metric"] for t in json.loads(paired.stdout)["tests"]] == ["repeats", "words"]
    shown = tailor("eval", "--show", out["run"]["id"], "--paired", "repeats,words", "--workspace", ws)
    assert "Paired permutation test on repeats" in shown.stdout and "Paired permutation test on words" in shown.stdout
    bad = tailor("eval", "--show", out["run"]["id"], "--paired", "loops", "--workspace", ws)
    assert bad.returncode == 2 and "choose from" in bad.stderr and "repeats" in bad.stderr


def test_eval_user_errors_exit_2(tiny_model_dir, tmp_path):
    ws = tmp_path / "ws"
    r = tailor("eval", "--set", "test", "--rag", "off", "--workspace", ws, "--model", tiny_model_dir)
    assert r.returncode == 2 and "dataset version" in r.stderr and "Traceback" not in r.stderr
    r = tailor("eval", "--set", tmp_path / "nope.jsonl", "--rag", "off", "--workspace", ws, "--model", tiny_model_dir)
    assert r.returncode == 2 and r.stderr.startswith("tailor: error:")  # found before loading the model
    r = tailor("eval", "--show", "missing-run", "--workspace", ws)
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_eval_prompted_arm_takes_its_style_prompt_from_a_file(tiny_model_dir, facts_file, tmp_path):
    """The CLI plumbing of --style-prompt (a text value takes the same path; the runner's tests
    cover the prompt itself). One subprocess per case: each loads a model."""
    path = tmp_path / "style.txt"
    path.write_text("Speak like a lighthouse keeper.\nKeep it short.\n", encoding="utf-8")
    r = tailor(
        "eval",
        "--arms",
        "base,prompted",
        "--style-prompt",
        f"@{path}",
        "--rag",
        "off",
        "--set",
        facts_file,
        "--max-new-tokens",
        "4",
        "--no-loss",
        "--json",
        "--workspace",
        tmp_path / "ws",
        "--model",
        tiny_model_dir,
    )
    assert r.returncode == 0, r.stderr
    run = json.loads(r.stdout)["run"]
    assert [a["key"] for a in run["arms"]] == ["base", "prompted"] and run["status"] == "done"
    assert run["style_prompt"] == "Speak like a lighthouse keeper.\nKeep it short."  # the file's text, stripped
    assert run["system_prompt"] is None


def test_eval_prompted_arm_builds_its_default_from_the_workspace_pairs(tiny_model_dir, facts_file, tmp_path):
    from assistant.workspace import Workspace
    from tuning.example import chat_example
    from tuning.example_store import ExampleStore

    ws = tmp_path / "ws"
    common = [
        "--arms",
        "base,prompted",
        "--rag",
        "off",
        "--set",
        facts_file,
        "--workspace",
        ws,
        "--model",
        tiny_model_dir,
    ]
    r = tailor("eval", "--style-prompt", f"@{tmp_path / 'missing.txt'}", *common)
    assert r.returncode == 2 and r.stderr.startswith("tailor: error:") and "missing.txt" in r.stderr
    assert "Traceback" not in r.stderr
    # without pairs to build one from, the runner's refusal (tests/evals/test_prompted_arm.py)

    store = ExampleStore(Workspace(ws).db)
    store.add_many([chat_example("Rain tips?", "Ahoy! Mudguards, rider.", split="train")], assign_splits=False)
    r = tailor("eval", *common, "--max-new-tokens", "4", "--no-loss", "--json")
    assert r.returncode == 0, r.stderr
    style = json.loads(r.stdout)["run"]["style_prompt"]
    assert "Rain tips?" in style and "Ahoy! Mudguards, rider." in style  # built from the workspace's train pair
