"""The Tune tab's timer must not stop on a page that still shows a job running. A refresh
reads whether a job is active before it reads the job: a job that ends in between (a cancel's
grace thread, a worker finishing) keeps the timer on for one more tick, which shows the end.
Found by the browser test of issue #18 under load on 2 cores: the refresh read the job as
running, then `any_active()` as false, so the timer stopped on "stopping after the current
step…" for good."""

from __future__ import annotations

import subprocess
import sys

from tuning.job_store import JobStore
from tuning.jobs import JobManager


def _plant_running_job(ws) -> tuple[int, subprocess.Popen]:
    job_dir = ws.jobs_dir / "job-0001"
    job_dir.mkdir(parents=True)
    worker = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "-m", "tuning.worker", str(job_dir)],
        start_new_session=True,
    )
    JobStore(ws)
    now = "2026-01-01T00:00:00+00:00"
    with ws.db.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO tune_jobs(status, family, base_model, base_model_path, dataset_version, dataset_path,"
            " config_json, job_dir, pid, step, total_steps, created_at, updated_at)"
            " VALUES ('running','t','m','m','1','d','{}','jobs/job-0001',?,3,40,?,?)",
            (worker.pid, now, now),
        )
        return cur.lastrowid, worker


def test_a_job_that_ends_during_a_refresh_gets_one_more_tick(tiny_core, monkeypatch):
    from ui.app import build_ui

    job_id, worker = _plant_running_job(tiny_core.workspace)
    try:
        app = build_ui(tiny_core)
        refresh = next(fn.fn for fn in app.fns.values() if fn.api_name == "tune_refresh")
        real_progress = JobManager.progress

        def progress_then_the_job_ends(self, jid):
            progress = real_progress(self, jid)
            self.store.finish(jid, "cancelled", only_if=("running",), message="cancelled (the worker was stopped)")
            return progress

        monkeypatch.setattr(JobManager, "progress", progress_then_the_job_ends)
        summary, *_, view, _chat = refresh(str(job_id), {})
        assert "running" in summary
        assert view["running"]  # the page shows it running: the timer must tick again

        monkeypatch.setattr(JobManager, "progress", real_progress)
        summary, *_, view, _chat = refresh(str(job_id), {})
        assert "cancelled" in summary and not view["running"]  # that tick shows the end, then stops
    finally:
        worker.kill()
        worker.wait()
