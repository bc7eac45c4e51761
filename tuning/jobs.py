"""The training job queue: jobs run one at a time, in worker processes, others wait as `queued`.

A job = base model + dataset version + TrainConfig -> adapter. Its row is in `tune_jobs`
(tuning/job_store.py); its worker (`python -m tuning.worker JOB_DIR`, tuning/launch.py)
writes progress to JOB_DIR/progress.jsonl (tuning/progress.py) and its status to the row;
the app polls both. A worker is only signalled after checking that it is this workspace's
worker for that job (tuning/processes.py).

The app's queue thread (`start_background`) sleeps until something happens: a submit, resume
or cancel, a worker that this app started exiting (a thread waits on each one), or a pump()
from elsewhere (the Tune tab's timer while a page is open) that finds a job active. While a
job is active it checks every `interval` seconds (a worker started by the CLI or by an earlier
app is watched by its pid); with nothing active it has no timer at all. Jobs that the CLI
queues while the app is idle need no help from the app: `tailor tune` starts the worker
itself, and each worker starts the next queued job when it ends.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from assistant.db import utcnow
from assistant.errors import ValidationError
from assistant.workspace import Workspace, write_atomic

from .config import TrainConfig, default_threads
from .estimate import ESTIMATE_FILE
from .grounding_files import GroundingMix, write_grounding
from .job_store import TERMINAL_STATES, Job, JobStore
from .launch import check_launch, launch_hardware, prepare_launch, start_worker, worker_env
from .processes import is_our_worker, signal_group, worker_job_dir
from .progress import TrainingProgress, training_progress
from .registry import AdapterRegistry
from .trainer import last_checkpoint

log = logging.getLogger(__name__)

DEFAULT_FAMILY = "tailor"


class JobManager:
    """Queue and runner. One job runs at a time; others wait as `queued`. In the app a
    background thread calls `pump()` when something happens (see the module notes: no timer
    while nothing is active); the worker also starts the next queued job when it ends, so the
    queue moves even when only the CLI is used."""

    def __init__(self, workspace: Workspace, *, serving: bool = False, kill_timeout: float = 30.0):
        self.workspace = workspace
        self.store = JobStore(workspace)
        self.registry = AdapterRegistry(workspace)
        self.serving = serving
        self.kill_timeout = kill_timeout
        self._procs: dict[int, subprocess.Popen] = {}  # jobs this manager started, by id
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # set: the background thread should pump now
        self._idle = False  # the background thread sleeps without a timeout

    # ---- submitting ------------------------------------------------------------------------
    def submit(
        self,
        *,
        base_model: str,
        base_model_path: Path | str,
        dataset_version,
        dataset_path: Path | str,
        dataset_hash: str | None = None,
        config: TrainConfig | None = None,
        family: str | None = None,
        activate: bool = True,
        start: bool = True,
        grounding: GroundingMix | None = None,
        estimate: dict | None = None,
    ) -> Job:
        """Queue a job (and start it if nothing is running). `dataset_version` is the version
        id; `dataset_path` its folder with train.jsonl / validation.jsonl. `grounding`: the
        examples made from the documents for this job's training data only, written into the
        job folder (grounding.jsonl, grounding.json) before the job can start."""
        config = (config or TrainConfig()).validate()
        if config.strategy != "none":  # e.g. DeepSpeed not installed, FSDP on a CPU: refused before it is queued
            check_launch(config, launch_hardware(config)[0])
        family = (family or DEFAULT_FAMILY).strip()
        self.registry.next_name(family)  # validates the name early, before anything runs
        dataset_path = Path(dataset_path)
        if not (dataset_path / "train.jsonl").is_file():
            raise ValidationError(f"dataset version {dataset_version} has no train.jsonl in {dataset_path}")
        if not Path(base_model_path).is_dir():
            raise ValidationError(f"base model folder {base_model_path} does not exist")
        job_id, job_dir = self.store.insert(
            family=family,
            activate=activate,
            base_model=base_model,
            base_model_path=base_model_path,
            dataset_version=dataset_version,
            dataset_path=dataset_path,
            dataset_hash=dataset_hash,
            config=config,
            threads=config.threads or default_threads(self.serving),
            prepare=lambda folder: _prepare(folder, grounding, estimate),
        )
        job_dir.mkdir(parents=True, exist_ok=True)
        self._write_spec(job_id, job_dir)
        if start:
            self.pump()
        return self.store.get(job_id)

    # ---- running ---------------------------------------------------------------------------
    def _write_spec(self, job_id: int, job_dir: Path) -> None:
        # Rewritten at every launch: a job folder restored from a backup names the workspace
        # it was copied from, and a worker must never open another workspace's database.
        write_atomic(
            job_dir / "job.json", json.dumps({"job_id": job_id, "workspace": str(self.workspace.root)}, indent=2)
        )

    def pump(self) -> Job | None:
        """Reconcile running jobs with their processes, then start the next queued job if
        none is running. Returns the job started, if any."""
        try:
            with self._lock:
                self.reconcile()
                job = self.store.claim_next()
                if job is None:
                    return None
                try:
                    self._launch(job)
                except Exception as exc:
                    self.store.finish(job.id, "failed", error=f"could not start the worker: {exc}")
                    raise
                return self.store.get(job.id)
        finally:
            if self._idle and self.store.any_active():
                self._wake.set()  # the background thread slept with nothing to watch: watch this job

    def command(self, job: Job) -> list[str]:
        """The job's worker command; for several processes its accelerate config is written
        into the job folder first (tuning/launch.py)."""
        return prepare_launch(job.job_dir, TrainConfig.from_dict(job.config))

    def _launch(self, job: Job) -> None:
        if not self.store.owns(job.job_dir):
            raise ValidationError(
                f"job {job.id}'s folder {job.job_dir} is outside this workspace "
                f"({self.workspace.root}); it was copied from another workspace"
            )
        job.job_dir.mkdir(parents=True, exist_ok=True)
        self._write_spec(job.id, job.job_dir)
        env = worker_env(self.workspace.root, job.threads or default_threads(self.serving))
        proc = start_worker(self.command(job), job.job_dir, env)
        self._procs[job.id] = proc
        # The worker sets running itself; the pid is recorded now so cancel works at once.
        self.store.update(job.id, pid=proc.pid, started_at=job.started_at or utcnow())
        # Wake the background thread the moment this worker exits (no polling for it).
        threading.Thread(target=self._watch, args=(proc,), daemon=True, name=f"tailor-job-{job.id}-watch").start()

    def _watch(self, proc: subprocess.Popen) -> None:
        try:
            proc.wait()
        except Exception:
            log.debug("waiting for a worker failed", exc_info=True)
        self._wake.set()

    def reconcile(self) -> list[int]:
        """Mark jobs whose worker is gone. Returns the ids changed."""
        changed = []
        for job_id, worker in list(self._procs.items()):  # reap workers that ended on their own
            if worker.poll() is not None and self.store.get(job_id).status not in ("starting", "running"):
                self._procs.pop(job_id, None)
        for job in self.store.list(limit=20):
            if job.status not in ("starting", "running"):
                continue
            proc = self._procs.get(job.id)
            if proc is not None:
                code = proc.poll()
                if code is None:
                    continue
                self._procs.pop(job.id, None)
                if job.cancel_requested:
                    ok = self.store.finish(
                        job.id,
                        "cancelled",
                        only_if=("starting", "running"),
                        message="cancelled (the worker was stopped)",
                    )
                else:
                    how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
                    ok = self.store.finish(
                        job.id,
                        "failed",
                        only_if=("starting", "running"),
                        error=f"the training process {how}; see {job.job_dir / 'worker.log'}",
                        message="failed",
                    )
                if ok:
                    changed.append(job.id)
                continue
            if is_our_worker(job.pid, job.job_dir):
                continue  # still running (started before this app, or by the CLI)
            if job.status == "starting" and not job.pid and _age_s(job.updated_at) < 60:
                continue  # another process is starting it right now
            if self.store.get(job.id).cancel_requested:
                # Cancel stopped a worker this manager did not start (the CLI's, or one that
                # outlived an app restart): it is gone because it was told to go. Read afresh,
                # since the cancel may land after the list above was read; marking it
                # interrupted here would win the race with cancel's own bookkeeping.
                ok = self.store.finish(
                    job.id, "cancelled", only_if=("starting", "running"), message="cancelled (the worker was stopped)"
                )
            else:
                ok = self.store.finish(
                    job.id,
                    "interrupted",
                    only_if=("starting", "running"),
                    message=self._gone_message(job, "interrupted"),
                )
            if ok:
                changed.append(job.id)
        return changed

    def _gone_message(self, job: Job, what: str) -> str:
        """Why a job has no worker of this workspace, for its message (`what`: interrupted or
        cancelled)."""
        other = worker_job_dir(job.pid)
        stopped = ", nothing was stopped" if what == "cancelled" else ""
        if other is not None or not self.store.owns(job.job_dir):
            where = other or str(job.job_dir)
            return (
                f"{what}: its worker belongs to another copy of this workspace ({where}; was this one "
                f"restored from a backup or moved?) and was left alone{stopped}; resume it to train here"
            )
        if what == "cancelled":
            return (
                "cancelled: its process was already gone, nothing was stopped; resume it to continue "
                "from the last checkpoint"
            )
        return (
            f"{what}: its process is gone (app or machine restarted?); resume it to continue from the last checkpoint"
        )

    def recover(self) -> list[int]:
        """At app start: jobs left `running` by a previous app whose worker is gone become
        `interrupted`; a worker that survived the restart keeps running."""
        return self.reconcile()

    # ---- control ---------------------------------------------------------------------------
    def cancel(self, job_id: int, *, wait: bool = False, timeout: float | None = None) -> Job:
        """Queued: cancelled at once. Running: SIGTERM (the worker stops after its current
        step), then SIGKILL after `timeout` seconds if it is still alive."""
        job = self.store.get(job_id)
        if job.status == "queued":
            self.store.finish(job.id, "cancelled", only_if=("queued",), message="cancelled before it started")
            return self.store.get(job.id)
        if job.status not in ("starting", "running"):
            raise ValidationError(f"job {job.id} is {job.status}; only queued or running jobs can be cancelled")
        starting_elsewhere = job.status == "starting" and not job.pid and _age_s(job.updated_at) < 60
        if not self._owns_worker(job) and not starting_elsewhere:
            # No worker of this workspace runs it (gone, or the original's after a restore):
            # there is nothing to stop, and the pid must not be signalled.
            self.store.finish(
                job.id, "cancelled", only_if=("starting", "running"), message=self._gone_message(job, "cancelled")
            )
            self._wake.set()
            return self.store.get(job.id)
        self.store.update(job.id, cancel_requested=1, message="stopping after the current step…")
        self._signal(job, signal.SIGTERM)
        timeout = self.kill_timeout if timeout is None else timeout
        if wait:
            self._kill_after(job, timeout)
        else:
            threading.Thread(
                target=self._kill_after, args=(job, timeout), daemon=True, name=f"tailor-cancel-{job.id}"
            ).start()
        return self.store.get(job.id)

    def _owns_worker(self, job: Job) -> bool:
        """A process of this workspace runs the job: one this manager started and that has not
        exited, or a live process whose command line names this job's folder."""
        proc = self._procs.get(job.id)
        if proc is not None and proc.poll() is None:
            return True
        return bool(job.pid) and is_our_worker(job.pid, job.job_dir)

    def _signal(self, job: Job, sig: int) -> bool:
        """Signal the job's worker (its process group), only after checking it is this
        workspace's worker for this job. Returns whether a signal was sent."""
        proc = self._procs.get(job.id)
        if proc is not None and proc.poll() is None:
            signal_group(proc.pid, sig)  # started by us in its own session: its group is its pid
            return True
        pid = self.store.get(job.id).pid or job.pid  # the worker records its own pid when it starts
        if pid and is_our_worker(pid, job.job_dir):
            signal_group(pid, sig)
            return True
        return False

    def _kill_after(self, job: Job, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        proc = self._procs.get(job.id)
        message = "cancelled (the worker was stopped)"
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                break
            if proc is None and not self._owns_worker(self.store.get(job.id)):
                break
            time.sleep(0.2)
        else:
            message = "cancelled (killed after the grace period)"
            if self._signal(job, signal.SIGKILL):
                log.warning("job %s did not stop within %.0f s; killed it", job.id, timeout)
            if proc is not None:
                proc.wait(10)
        self.store.finish(job.id, "cancelled", only_if=("starting", "running"), message=message)
        self.pump()

    def resume(self, job_id: int) -> Job:
        """Queue an interrupted, failed or cancelled job again; it continues from its last
        checkpoint (weights, optimizer and scheduler state, step count) when it has one."""
        job = self.store.get(job_id)
        if not job.can_resume:
            raise ValidationError(
                f"job {job.id} is {job.status}; only interrupted, failed or cancelled jobs can be resumed"
            )
        ckpt = last_checkpoint(job.job_dir / "checkpoints")
        self.store.requeue(
            job.id, f"queued to resume from {ckpt.name}" if ckpt else "queued to start again (no checkpoint was saved)"
        )
        self.pump()
        return self.store.get(job.id)

    def wait(
        self,
        job_id: int,
        *,
        poll: float = 1.0,
        timeout: float | None = None,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Block until the job ends (moving the queue meanwhile); for `tailor tune --wait`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.pump()
            job = self.store.get(job_id)
            if on_update is not None:
                on_update(job)
            if job.status in TERMINAL_STATES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout} s")
            time.sleep(poll)

    # ---- reading ---------------------------------------------------------------------------
    def get(self, job_id: int) -> Job:
        return self.store.get(job_id)

    def list(self, limit: int = 50) -> list[Job]:
        return self.store.list(limit)

    def latest(self) -> Job | None:
        jobs = self.store.list(limit=1)
        return jobs[0] if jobs else None

    def progress(self, job_id: int, log_lines: int = 200) -> TrainingProgress:
        return training_progress(self.store.get(job_id), log_lines)

    # ---- background pump (the app) ---------------------------------------------------------
    def start_background(self, interval: float = 2.0) -> None:
        """Run the queue from a thread. It pumps when woken (submit, resume, cancel, a worker
        this app started exiting, or a pump() elsewhere that finds a job active), and every
        `interval` seconds only while a job is queued, starting or running (a worker that the
        CLI or an earlier app started is watched by its pid). With no job active it sleeps
        without a timeout: an idle app does no work at all for the queue."""
        if self._thread is not None:
            return
        self.recover()

        def loop():
            while not self._stop.is_set():
                self._idle = True  # first, so that a pump() elsewhere from now on wakes us
                try:
                    active = self.store.any_active()
                except Exception:  # noqa: BLE001 - the DB being busy: look again soon
                    active = True
                self._idle = not active
                self._wake.wait(interval if active else None)
                self._idle = False
                self._wake.clear()
                if self._stop.is_set():
                    break
                try:
                    self.pump()
                except Exception:
                    log.exception("job queue pump failed")

        self._thread = threading.Thread(target=loop, daemon=True, name="tailor-job-queue")
        self._thread.start()

    def wake(self) -> None:
        """Ask the background thread to pump now (e.g. after a job was queued elsewhere)."""
        self._wake.set()

    def watch_if_idle(self) -> None:
        """Someone saw a job active (a page's refresh): if the background thread sleeps without
        a timeout, wake it so it watches that job. A worker that `tailor tune` started while
        the app was idle is otherwise never checked, and if it is killed its job shows
        `running` until the app restarts. Does nothing while the thread already watches."""
        if self._idle:
            self._wake.set()

    def stop_background(self) -> None:
        self._stop.set()
        self._wake.set()


def _prepare(folder: Path, grounding: GroundingMix | None, estimate: dict | None) -> None:
    """A job folder's inputs, written before the job can start: its grounding examples, and the
    estimate it was started with (the worker compares it with the real run)."""
    if grounding is not None:
        write_grounding(folder, grounding)
    if estimate is not None:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / ESTIMATE_FILE, json.dumps(estimate, indent=1))


def _age_s(iso: str) -> float:
    try:
        return (datetime.now(timezone.utc) - datetime.fromisoformat(iso)).total_seconds()
    except ValueError:
        return 1e9
