"""A restored backup never controls the original's training jobs (issue #12).

Jobs are stored relative to their workspace, and a worker process is only signalled after
checking that its command line names this workspace's job folder (full resolved path), never
by pid alone: a copy restored mid-job sees the original's worker as someone else's."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.backup import backup_workspace
from assistant.restore import restore_workspace
from assistant.workspace import Workspace
from tuning.job_store import JobStore, _m001_jobs
from tuning.jobs import JobManager
from tuning.processes import is_our_worker, process_alive, worker_job_dir


def _raw(ws_root: Path, sql: str, *args):
    conn = sqlite3.connect(ws_root / "tailor.db")
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_cancel_in_a_restored_copy_leaves_the_original_training(
    workspace, tune_manager, tiny_model_dir, tune_version_dir, tune_helpers, tmp_path, wait_until
):
    job = tune_helpers.submit(tune_manager, tiny_model_dir, tune_version_dir, max_steps=100000, eval_steps=50000)
    wait_until(lambda: tune_manager.get(job.id).status == "running" and tune_manager.get(job.id).step >= 1, timeout=180)
    pid = tune_manager.get(job.id).pid
    archive = tmp_path / "mid-job.tar"
    backup_workspace(workspace, archive)

    restore_workspace(archive, tmp_path / "copy")
    copy = JobManager(Workspace(tmp_path / "copy"))
    # the copy's rows point into the copy, not at the original's folders
    assert _raw(tmp_path / "copy", "SELECT job_dir FROM tune_jobs WHERE id=?", job.id) == [(f"jobs/job-{job.id:04d}",)]
    assert copy.get(job.id).job_dir == (tmp_path / "copy").resolve() / "jobs" / f"job-{job.id:04d}"
    assert copy.get(job.id).pid == pid  # the copied row still carries the original's pid ...

    cancelled = copy.cancel(job.id, wait=True, timeout=5)  # ... which must not be signalled
    assert cancelled.status == "cancelled"
    assert "another copy of this workspace" in cancelled.message and "nothing was stopped" in cancelled.message
    assert str(workspace.jobs_dir / f"job-{job.id:04d}") in cancelled.message

    # The original keeps training: same worker, still running, and its step keeps growing.
    step = tune_manager.get(job.id).step
    wait_until(lambda: tune_manager.get(job.id).step > step + 1, timeout=60)
    assert process_alive(pid) and tune_manager.get(job.id).status == "running"
    assert not tune_manager.get(job.id).cancel_requested

    # Another copy, opened by an app (recover): the job is interrupted there, not adopted.
    restore_workspace(archive, tmp_path / "copy2")
    app = JobManager(Workspace(tmp_path / "copy2"))
    assert app.recover() == [job.id]
    interrupted = app.get(job.id)
    assert interrupted.status == "interrupted" and interrupted.can_resume
    assert "another copy of this workspace" in interrupted.message
    assert process_alive(pid) and tune_manager.get(job.id).status == "running"

    done = tune_manager.cancel(job.id, wait=True, timeout=60)  # the original's own cancel still works
    assert done.status == "cancelled" and not process_alive(pid)


def _fake_worker(job_dir: Path, cwd: Path | None = None) -> subprocess.Popen:
    """A process whose command line looks like a worker's (`... -m tuning.worker JOB_DIR`)."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "-m", "tuning.worker", str(job_dir)],
        cwd=cwd,
        start_new_session=True,
    )


def _insert_running(ws: Workspace, pid: int, job_dir: str = "jobs/job-0001") -> int:
    JobStore(ws)
    now = "2020-01-01T00:00:00+00:00"
    with ws.db.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO tune_jobs(status, family, base_model, base_model_path, dataset_version, dataset_path,"
            " config_json, job_dir, pid, created_at, updated_at) VALUES ('running','t','m','m','1','d','{}',?,?,?,?)",
            (job_dir, pid, now, now),
        )
        return cur.lastrowid


def test_a_worker_is_ours_only_when_it_names_this_job_folder(tmp_path):
    a, b = Workspace(tmp_path / "a"), Workspace(tmp_path / "b")
    proc = _fake_worker(a.jobs_dir / "job-0001")
    rel = _fake_worker(Path("jobs") / "job-0002", cwd=a.root)  # a relative folder, from its cwd
    (tmp_path / "link").symlink_to(a.root)
    try:
        assert worker_job_dir(proc.pid) == str(a.jobs_dir / "job-0001")
        assert is_our_worker(proc.pid, a.jobs_dir / "job-0001")
        assert is_our_worker(proc.pid, tmp_path / "link" / "jobs" / "job-0001")  # same folder, other path
        assert not is_our_worker(proc.pid, b.jobs_dir / "job-0001")  # same name, another workspace
        assert not is_our_worker(proc.pid, a.jobs_dir / "job-0002")
        assert is_our_worker(rel.pid, a.jobs_dir / "job-0002")
        assert not is_our_worker(os.getpid(), a.jobs_dir / "job-0001")  # alive, but not a worker
        assert worker_job_dir(os.getpid()) is None
    finally:
        for p in (proc, rel):
            p.kill()
            p.wait()
    assert not is_our_worker(proc.pid, a.jobs_dir / "job-0001")


def test_cancel_never_signals_a_pid_that_is_not_this_workspaces_worker(tmp_path):
    original, copy = Workspace(tmp_path / "original"), Workspace(tmp_path / "copy")
    theirs = _fake_worker(original.jobs_dir / "job-0001")
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        job_id = _insert_running(copy, theirs.pid)
        other_id = _insert_running(copy, stranger.pid, "jobs/job-0002")
        manager = JobManager(copy, kill_timeout=0.5)
        job = manager.cancel(job_id, wait=True)
        assert job.status == "cancelled" and "another copy" in job.message
        assert str(original.jobs_dir / "job-0001") in job.message
        other = manager.cancel(other_id, wait=True)
        assert other.status == "cancelled" and "process was already gone" in other.message
        assert theirs.poll() is None and stranger.poll() is None  # neither got SIGTERM nor SIGKILL
    finally:
        for p in (theirs, stranger):
            p.kill()
            p.wait()


def test_cancel_signals_this_workspaces_worker_found_by_its_folder(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ours = _fake_worker(ws.jobs_dir / "job-0001")
    try:
        job_id = _insert_running(ws, ours.pid)
        job = JobManager(ws, kill_timeout=5).cancel(job_id, wait=True)
        assert ours.wait(10) == -signal.SIGTERM  # started elsewhere (CLI, earlier app): found and stopped
        assert job.status == "cancelled"
    finally:
        if ours.poll() is None:
            ours.kill()
            ours.wait()


def test_old_absolute_job_rows_become_relative(tmp_path):
    root = tmp_path / "ws"
    ws = Workspace(root)
    ws.db.migrate("tuning_jobs", [_m001_jobs])  # a database from before paths were relative
    now = "2020-01-01T00:00:00+00:00"
    rows = [  # (job_dir, dataset_path, base_model_path)
        (str(ws.jobs_dir / "job-0001"), str(root / "datasets" / "v1"), "/opt/models/base"),
        ("/somewhere/else/jobs/job-0002", "/somewhere/else/datasets/v2", str(ws.models_dir / "Base")),
    ]
    with ws.db.transaction() as conn:
        for job_dir, dataset, base in rows:
            conn.execute(
                "INSERT INTO tune_jobs(status, family, base_model, base_model_path, dataset_version,"
                " dataset_path, config_json, job_dir, created_at, updated_at)"
                " VALUES ('failed','t','m',?,'1',?,'{}',?,?,?)",
                (base, dataset, job_dir, now, now),
            )
    store = JobStore(Workspace(root))  # migrates
    assert _raw(root, "SELECT job_dir, dataset_path, base_model_path FROM tune_jobs ORDER BY id") == [
        ("jobs/job-0001", "datasets/v1", "/opt/models/base"),
        # a restored copy of an older backup: the job folder is always <workspace>/jobs/job-NNNN
        ("jobs/job-0002", "/somewhere/else/datasets/v2", "models/Base"),
    ]
    first, second = store.get(1), store.get(2)
    assert first.job_dir == ws.jobs_dir / "job-0001" and first.dataset_path == str(root / "datasets" / "v1")
    assert first.base_model_path == "/opt/models/base"  # outside the workspace: read as it is
    assert second.job_dir == ws.jobs_dir / "job-0002" and second.base_model_path == str(ws.models_dir / "Base")


def test_submit_stores_paths_relative_to_the_workspace(workspace, tune_version_dir, tiny_model_dir):
    import shutil

    from tuning.config import TrainConfig

    inside = workspace.root / "datasets" / "v1"
    shutil.copytree(tune_version_dir, inside)
    manager = JobManager(workspace)
    job = manager.submit(
        base_model="tiny",
        base_model_path=tiny_model_dir,
        dataset_version=1,
        dataset_path=inside,
        config=TrainConfig(max_steps=1),
        start=False,
    )
    assert _raw(workspace.root, "SELECT job_dir, dataset_path, base_model_path FROM tune_jobs") == [
        (f"jobs/job-{job.id:04d}", "datasets/v1", str(tiny_model_dir))
    ]
    assert job.job_dir == workspace.jobs_dir / f"job-{job.id:04d}" and job.dataset_path == str(inside)
    assert json.loads((job.job_dir / "job.json").read_text())["workspace"] == str(workspace.root)


def test_a_worker_refuses_a_job_folder_copied_from_another_workspace(
    workspace, tune_version_dir, tiny_model_dir, tmp_path
):
    from tuning import worker
    from tuning.config import TrainConfig

    job = JobManager(workspace).submit(
        base_model="tiny",
        base_model_path=tiny_model_dir,
        dataset_version=1,
        dataset_path=tune_version_dir,
        config=TrainConfig(max_steps=1),
        start=False,
    )
    # a copy of the folder whose job.json still names the original workspace
    copied = tmp_path / "copy" / "jobs" / job.job_dir.name
    copied.mkdir(parents=True)
    (copied / "job.json").write_text((job.job_dir / "job.json").read_text())
    before = _raw(workspace.root, "SELECT * FROM tune_jobs")
    assert worker.run(copied) == 2
    assert _raw(workspace.root, "SELECT * FROM tune_jobs") == before  # the original's row untouched
    assert not (copied / "progress.jsonl").exists()


@pytest.fixture
def counting(monkeypatch):
    """A JobManager whose pump() calls are counted."""

    def make(ws):
        manager = JobManager(ws)
        manager.pumps = 0
        real = manager.pump

        def pump():
            manager.pumps += 1
            return real()

        manager.pump = pump
        return manager

    return make


def test_the_idle_queue_thread_does_not_wake_up(workspace, counting, wait_until):
    import time

    manager = counting(workspace)
    manager.start_background(interval=0.02)
    try:
        time.sleep(0.5)
        assert manager.pumps == 0  # nothing active: no timer (before: one pump every interval)
        manager.wake()
        wait_until(lambda: manager.pumps == 1, timeout=5)
        time.sleep(0.3)
        assert manager.pumps == 1
    finally:
        manager.stop_background()


def test_the_queue_thread_watches_a_job_only_while_it_is_active(workspace, counting, wait_until):
    """A worker started elsewhere (the CLI) and found by a pump (the Tune tab): the thread
    watches it by pid while it runs, marks it when it dies, then goes back to sleep."""
    import time

    manager = counting(workspace)
    manager.start_background(interval=0.05)
    outsider = _fake_worker(workspace.jobs_dir / "job-0001")
    try:
        job_id = _insert_running(workspace, outsider.pid)
        JobManager(workspace).pump()  # another manager's pump sees nothing to do ...
        manager.pump()  # ... this one's (e.g. the tab's timer) tells the sleeping thread to watch
        wait_until(lambda: manager.pumps >= 4, timeout=10)
        assert manager.get(job_id).status == "running"
        outsider.kill()
        outsider.wait()
        wait_until(lambda: manager.get(job_id).status == "interrupted", timeout=10)
        time.sleep(0.2)
        settled = manager.pumps
        time.sleep(0.5)
        assert manager.pumps == settled  # nothing active any more: asleep again
    finally:
        manager.stop_background()
        if outsider.poll() is None:
            outsider.kill()
            outsider.wait()


def test_a_page_that_sees_a_job_wakes_the_sleeping_thread_to_watch_it(workspace, counting, wait_until):
    """A worker that the CLI started while the app slept: the Tune tab's refresh (which only
    reads) finds it active and calls `watch_if_idle`; when the worker is then killed, the job
    becomes `interrupted` instead of showing `running` until the app restarts."""
    import time

    manager = counting(workspace)
    manager.start_background(interval=0.05)
    outsider = _fake_worker(workspace.jobs_dir / "job-0001")
    try:
        time.sleep(0.3)  # the thread is asleep without a timeout
        job_id = _insert_running(workspace, outsider.pid)
        time.sleep(0.3)
        assert manager.pumps == 0  # nobody told it
        manager.watch_if_idle()
        wait_until(lambda: manager.pumps >= 3, timeout=10)  # awake, watching every interval
        busy = manager.pumps
        for _ in range(20):
            manager.watch_if_idle()  # while it watches, a page's refreshes add no pumps
        time.sleep(0.02)
        assert manager.pumps <= busy + 2
        outsider.kill()
        outsider.wait()
        wait_until(lambda: manager.get(job_id).status == "interrupted", timeout=10)
    finally:
        manager.stop_background()
        if outsider.poll() is None:
            outsider.kill()
            outsider.wait()


def test_tailor_jobs_cancel_in_a_copy_says_so_and_leaves_the_worker_alone(tmp_path, capsys):
    from cli.main import main as tailor_main

    original, copy = Workspace(tmp_path / "original"), Workspace(tmp_path / "copy")
    theirs = _fake_worker(original.jobs_dir / "job-0001")
    try:
        job_id = _insert_running(copy, theirs.pid)
        assert tailor_main(["jobs", "cancel", str(job_id), "--timeout", "1", "--workspace", str(copy.root)]) == 0
        out = capsys.readouterr().out
        assert f"job {job_id} · cancelled" in out and "another copy of this workspace" in out
        assert theirs.poll() is None
    finally:
        theirs.kill()
        theirs.wait()


def test_a_worker_cancel_stopped_is_cancelled_even_when_the_queue_sees_it_gone_first(tmp_path):
    """Cancel of a worker this manager did not start (the CLI's): once it has exited, the
    queue's reconcile may see it gone before cancel's own bookkeeping does. The job is then
    cancelled, not interrupted (the CI failure of the browser first-run test under load)."""
    ws = Workspace(tmp_path / "ws")
    proc = _fake_worker(ws.jobs_dir / "job-0001")
    job_id = _insert_running(ws, proc.pid)
    manager = JobManager(ws)
    assert manager.reconcile() == []  # alive and ours: still running
    with ws.db.transaction() as conn:
        conn.execute("UPDATE tune_jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
    proc.kill()
    proc.wait()
    assert manager.reconcile() == [job_id]
    job = manager.get(job_id)
    assert job.status == "cancelled" and job.message == "cancelled (the worker was stopped)", job.message
