"""Fixtures for tests/tuning. Curation fixtures are prefixed `cur_` (the training tests
share this file)."""

from __future__ import annotations

import pytest


@pytest.fixture
def cur_curation(workspace):
    from tuning import open_curation

    return open_curation(workspace)


@pytest.fixture
def cur_store(cur_curation):
    return cur_curation.store


@pytest.fixture
def cur_log(workspace):
    from assistant.conversations import ConversationLog

    return ConversationLog(workspace.db)


@pytest.fixture
def cur_conversation(cur_log):
    """A stored conversation (system prompt, two turns; the second reply grounded in
    passages), written through the real conversation log without generating."""
    from assistant.prompting import Passage

    conv = cur_log.create(system_prompt="You are Lantern Bay's assistant.")
    cur_log.add_message(conv.id, "user", "Hello!")
    first = cur_log.add_message(conv.id, "assistant", "Ahoy, rider! How can I help?")
    cur_log.add_message(conv.id, "user", "When do you open on Sundays?")
    passage = Passage(id=7, source="opening_hours.md", text="On Sundays we open from 10:00 to 16:00.", score=0.8)
    second = cur_log.add_message(
        conv.id,
        "assistant",
        "We open at 9.",
        retrieval={"abstained": False, "reason": "", "passages": [passage.as_dict()]},
    )
    return {"conversation": cur_log.get(conv.id), "first": first, "second": second, "passage": passage}


# ---- training fixtures (prefixed tune_) ---------------------------------------------------------
DEMO_PAIRS = __import__("pathlib").Path(__file__).resolve().parents[2] / "demo" / "lantern_bay" / "pairs.jsonl"


def _tune_write_version(folder, n_train: int = 24, n_validation: int = 6, n_test: int = 0):
    """A dataset version folder in the versions contract (train/validation/test.jsonl +
    manifest.json) built from the first demo pairs."""
    import json

    pairs = [json.loads(line) for line in DEMO_PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]
    folder.mkdir(parents=True, exist_ok=True)
    start = 0
    counts = {}
    for split, n in (("train", n_train), ("validation", n_validation), ("test", n_test)):
        lines = []
        for i, p in enumerate(pairs[start : start + n], start=start + 1):
            lines.append(
                json.dumps(
                    {
                        "example_id": i,
                        "label": None,
                        "tags": [],
                        "messages": [
                            {"role": "user", "content": p["prompt"]},
                            {"role": "assistant", "content": p["completion"]},
                        ],
                    }
                )
            )
        start += n
        counts[split] = n
        (folder / f"{split}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    (folder / "manifest.json").write_text(json.dumps({"id": 1, "content_hash": "test", "counts": counts}))
    return folder


@pytest.fixture
def tune_version_dir(tmp_path):
    return _tune_write_version(tmp_path / "version")


@pytest.fixture
def tune_manager(workspace):
    from tuning.jobs import JobManager

    manager = JobManager(workspace)
    yield manager
    # never leave a worker behind: kill any job still running
    import os
    import signal

    for job in manager.store.list():
        if job.status in ("starting", "running") and job.pid:
            try:
                os.killpg(job.pid, signal.SIGKILL)
            except OSError:
                pass


def _tune_submit(manager, model_dir, version_dir, grounding=None, **config):
    from tuning.config import TrainConfig

    base = dict(threads=1, batch_size=4, max_length=128)
    return manager.submit(
        base_model="tiny",
        base_model_path=model_dir,
        dataset_version=1,
        dataset_path=version_dir,
        dataset_hash="test",
        config=TrainConfig(**{**base, **config}),
        grounding=grounding,
    )


@pytest.fixture
def tune_helpers():
    """Helpers for training tests: write_version(folder, n_train, n_validation),
    submit(manager, model_dir, version_dir, grounding=None, **config) (`grounding`: a
    GroundingMix for the job's folder). (To wait for a job: `wait_until`, in
    tests/conftest.py.)"""
    from types import SimpleNamespace

    return SimpleNamespace(write_version=_tune_write_version, submit=_tune_submit)
