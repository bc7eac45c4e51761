"""The real server is stopped while a training job runs, and started again.

Two ways a server goes down mid-job:
1. stopped normally (SIGTERM, as Ctrl-C or a service manager does): the training worker runs
   in its own process group, so it keeps training; the restarted server adopts it and shows
   its progress.
2. the machine goes down (the server and the worker both SIGKILLed): the restarted server
   marks the job interrupted with a message saying how to continue, and Resume carries on
   from the last checkpoint.
Either way the server comes back up, and the conversation saved before is still there.

Everything goes through the running server's own API (gradio_client calls the Tune and Chat
tabs' events by api_name), on the tiny random model."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from ..conftest import read_db

pytestmark = pytest.mark.server

REPO_ROOT = Path(__file__).resolve().parents[2]
PAIRS = REPO_ROOT / "demo" / "lantern_bay" / "pairs.jsonl"
GREEDY = (0.0, 0.9, 16)  # temperature, top-p, max new tokens


def _job(ws: Path) -> dict:
    [row] = read_db(ws, "SELECT status, step, total_steps, pid, message FROM tune_jobs")
    return dict(zip(("status", "step", "total", "pid", "message"), row))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_server_stopped_mid_job_and_started_again(tailor_server, tiny_model_dir, tmp_path, wait_until):
    from gradio_client import Client

    from assistant.workspace import Workspace
    from tuning import open_curation
    from tuning.dataset_import import import_file
    from tuning.progress import read_progress

    ws = tmp_path / "ws"
    small = tmp_path / "pairs.jsonl"
    small.write_text("".join(PAIRS.read_text(encoding="utf-8").splitlines(keepends=True)[:60]), encoding="utf-8")
    assert import_file(open_curation(Workspace(ws)).store, small).imported == 60

    server = tailor_server(ws, tiny_model_dir)
    client = Client(server.url, verbose=False)
    _, conv_id, _, _ = client.predict("Remember me after the restart", "", "base", "", *GREEDY, api_name="/send")
    # A long job (many epochs, early stopping off, one thread) so it is still running through
    # both restarts; it is cancelled at the end instead of being waited for.
    client.predict("restart", True, 100, 2e-4, 4, 4, 64, 0, 1, api_name="/tune_start")
    wait_until(lambda: _job(ws)["step"] >= 1, timeout=240, interval=0.5)
    worker = _job(ws)["pid"]

    # 1. A normal stop: the worker is not the server's child in its process group, it trains on.
    server.stop()
    assert server.proc.returncode is not None
    assert _alive(worker), "stopping the server must not kill the training job"
    server = tailor_server(ws, tiny_model_dir)
    client = Client(server.url, verbose=False)
    summary = client.predict(None, api_name="/tune_refresh")[0]
    assert "running" in summary.lower(), summary
    before = _job(ws)["step"]
    wait_until(lambda: _job(ws)["step"] > before, timeout=120, interval=0.5)  # adopted: its progress still arrives
    assert _job(ws)["status"] == "running" and _job(ws)["pid"] == worker

    # 2. The machine goes down: the server and the worker die at once, no clean-up runs. Wait
    # for a checkpoint first, so there is something to resume from.
    job_dir = ws / read_db(ws, "SELECT job_dir FROM tune_jobs")[0][0]  # stored relative to the workspace
    wait_until(
        lambda: list((job_dir / "checkpoints").glob("checkpoint-*/trainer_state.json")), timeout=240, interval=0.5
    )
    os.kill(server.proc.pid, signal.SIGKILL)
    os.killpg(worker, signal.SIGKILL)
    server.proc.wait(10)
    wait_until(lambda: not _alive(worker), timeout=30, interval=0.5)
    server = tailor_server(ws, tiny_model_dir)
    client = Client(server.url, verbose=False)
    job = _job(ws)
    assert job["status"] == "interrupted" and "resume it" in job["message"], job
    summary = client.predict(None, api_name="/tune_refresh")[0]
    assert "interrupted" in summary.lower(), summary  # the Tune tab says so
    stopped_at = job["step"]

    checkpoint = max(int(p.name.split("-")[1]) for p in (job_dir / "checkpoints").glob("checkpoint-*"))
    client.predict(None, api_name="/tune_resume")
    wait_until(lambda: _job(ws)["status"] == "running" and _job(ws)["step"] > checkpoint, timeout=240, interval=0.5)
    # it went on from the last checkpoint, not from step 0
    resumed = [r for r in read_progress(job_dir) if r["kind"] == "resume"]
    assert resumed and resumed[-1]["from_step"] == checkpoint <= stopped_at
    client.predict(None, api_name="/tune_cancel")
    wait_until(lambda: _job(ws)["status"] == "cancelled", timeout=120, interval=0.5)

    # The conversation from before both restarts is intact, and the server still chats.
    rows = read_db(ws, "SELECT role, content FROM messages WHERE conversation_id=? ORDER BY id", conv_id)
    assert [r[0] for r in rows] == ["user", "assistant"] and rows[0][1] == "Remember me after the restart"
    _, again, _, stats = client.predict("Still there?", conv_id, "base", "", *GREEDY, api_name="/send")
    assert again == conv_id and "tokens" in stats
    assert server.proc.poll() is None
