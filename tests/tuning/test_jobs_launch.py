"""The worker is started as `python -m tuning.worker JOB_DIR` from its job folder, with the
environment passed through and nothing pointing at a source checkout (no cwd there, no
PYTHONPATH), so it runs the same when Tailor is installed with `pip install .`."""

from __future__ import annotations

import sys

from tuning.jobs import JobManager
from tuning.launch import start_worker, worker_env


def test_the_manager_launches_the_module_from_the_job_folder(workspace, tiny_model_dir, tune_version_dir, monkeypatch):
    from tuning import launch

    started = []

    class FakeWorker:
        pid = 999_999_999  # no such process: never signalled

        def poll(self):
            return 0

        def wait(self, timeout=None):
            return 0

    def fake_popen(cmd, **kwargs):
        started.append((cmd, kwargs))
        return FakeWorker()

    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setenv("TAILOR_TEST_PASSED_THROUGH", "yes")
    monkeypatch.setattr(launch.subprocess, "Popen", fake_popen)
    job = JobManager(workspace).submit(
        base_model="tiny", base_model_path=tiny_model_dir, dataset_version=1, dataset_path=tune_version_dir
    )
    [(cmd, kwargs)] = started
    assert cmd == [sys.executable, "-m", "tuning.worker", str(job.job_dir)]
    assert kwargs["cwd"] == str(job.job_dir) and kwargs["start_new_session"] is True
    env = kwargs["env"]
    assert "PYTHONPATH" not in env and env["TAILOR_TEST_PASSED_THROUGH"] == "yes"
    assert env["TAILOR_HOME"] == str(workspace.root) and env["OMP_NUM_THREADS"] == str(job.threads)


def test_the_worker_module_is_found_without_the_checkout(tmp_path, monkeypatch):
    """Started the way the manager starts it, by an app whose current folder holds a decoy
    `tuning` package and with no PYTHONPATH: the interpreter's own Tailor runs (here it
    prints its usage, as no job folder was given)."""
    app_dir = tmp_path / "elsewhere"
    (app_dir / "tuning").mkdir(parents=True)
    (app_dir / "tuning" / "__init__.py").write_text("raise SystemExit('the decoy was imported')\n")
    monkeypatch.chdir(app_dir)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    job_dir = tmp_path / "ws" / "jobs" / "job-0001"
    job_dir.mkdir(parents=True)
    proc = start_worker([sys.executable, "-m", "tuning.worker"], job_dir, worker_env(tmp_path / "ws", 1))
    assert proc.wait(120) == 2, (job_dir / "worker.log").read_text()
    assert "usage: python -m tuning.worker JOB_DIR" in (job_dir / "worker.log").read_text()
