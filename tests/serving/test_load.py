"""A bounded load test on loopback: concurrent OpenAI clients against a server with a small
queue, while a real training job runs in the same workspace. Beyond the queue the server
answers 429 with a clear message; it never crashes and keeps answering afterwards."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from assistant.workspace import Workspace

pytestmark = pytest.mark.server

CLIENTS = 8
QUEUE = 2
PAIRS = Path(__file__).resolve().parents[2] / "demo" / "lantern_bay" / "pairs.jsonl"


def _dataset_version(folder: Path, n_train: int = 16, n_validation: int = 4) -> Path:
    pairs = [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]
    folder.mkdir(parents=True)
    rows = iter(pairs)
    for split, n in (("train", n_train), ("validation", n_validation)):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(n):
                p = next(rows)
                fh.write(
                    json.dumps(
                        {
                            "example_id": i + 1,
                            "label": None,
                            "tags": [],
                            "messages": [
                                {"role": "user", "content": p["prompt"]},
                                {"role": "assistant", "content": p["completion"]},
                            ],
                        }
                    )
                    + "\n"
                )
    (folder / "manifest.json").write_text(
        json.dumps({"id": 1, "content_hash": "load-test", "counts": {"train": n_train, "validation": n_validation}})
    )
    return folder


@pytest.fixture
def running_training_job(tmp_path, tiny_model_dir, wait_until):
    """A real TRL/PEFT training job (tuning/jobs.py) on the tiny model, running in its own
    process group for the whole test; cancelled (then killed) afterwards."""
    from tuning.config import TrainConfig
    from tuning.jobs import JobManager

    ws = Workspace(tmp_path / "ws")
    manager = JobManager(ws)
    job = manager.submit(
        base_model="tiny",
        base_model_path=tiny_model_dir,
        dataset_version=1,
        dataset_path=_dataset_version(tmp_path / "version"),
        dataset_hash="load-test",
        config=TrainConfig(threads=1, batch_size=4, max_length=128, max_steps=100000, eval_steps=50000),
    )
    wait_until(lambda: manager.get(job.id).step >= 2, timeout=240, interval=0.2, message="the job never reached step 2")
    yield manager, job
    try:
        if manager.get(job.id).status in ("starting", "running"):
            manager.cancel(job.id, wait=True, timeout=30)
    finally:
        pid = manager.get(job.id).pid
        if pid and manager.get(job.id).status in ("starting", "running"):
            os.killpg(pid, signal.SIGKILL)


def test_queue_limit_under_concurrent_clients_while_training(
    tailor_server, tiny_model_dir, tmp_path, openai_for, running_training_job
):
    manager, job = running_training_job
    server = tailor_server(
        tmp_path / "ws",
        tiny_model_dir,
        # One request decoded at a time (TAILOR_PARALLEL=1), so a burst of 8 overflows the queue of 2
        # on either backend; llama.cpp would otherwise take all 8 into one batch.
        env={
            "TAILOR_MAX_QUEUE": str(QUEUE),
            "TAILOR_QUEUE_TIMEOUT": "120",
            "TAILOR_THREADS": "1",
            "TAILOR_PARALLEL": "1",
        },
    )
    client = openai_for(server)
    step_before = manager.get(job.id).step
    barrier = threading.Barrier(CLIENTS)

    def one(i: int):
        barrier.wait()
        started = time.perf_counter()
        try:
            # greedy on the tiny base model runs to max_tokens: each request holds the engine a while
            r = client.chat.completions.create(
                model="base", messages=[{"role": "user", "content": f"client {i}"}], temperature=0, max_tokens=256
            )
            return 200, r.usage.completion_tokens, time.perf_counter() - started, ""
        except openai.APIStatusError as exc:
            return (
                exc.status_code,
                0,
                time.perf_counter() - started,
                (f"{exc.message} retry-after={exc.response.headers.get('retry-after')}"),
            )

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(one, range(CLIENTS), timeout=300))  # a time limit on the whole burst
    codes = [r[0] for r in results]
    assert set(codes) <= {200, 429, 503}, results
    assert 1 <= codes.count(200) and codes.count(429) >= 1, results
    # at most the running request and the queue were admitted at once; the rest were told why
    rejected = [r for r in results if r[0] == 429]
    assert all("TAILOR_MAX_QUEUE" in r[3] and "retry-after=5" in r[3] for r in rejected), rejected
    assert all(r[1] == 256 for r in results if r[0] == 200)

    # The server is still healthy and answers the next request; the job kept training throughout.
    after = client.chat.completions.create(
        model="base", messages=[{"role": "user", "content": "still there?"}], max_tokens=4
    )
    assert after.choices[0].finish_reason in ("stop", "length")
    assert server.proc.poll() is None
    now = manager.get(job.id)
    assert now.status == "running" and now.step > step_before, now
