"""Training jobs: a table of jobs, a queue that runs one at a time, and the worker process.

A job = base model + dataset version + TrainConfig -> adapter. Each runs in its own process
(`python -m tuning.worker JOB_DIR`, started in a new session), so a crash, an out-of-memory
kill or a closed browser never takes the app down. The worker writes its progress as JSON
lines to JOB_DIR/progress.jsonl and its status to the `tune_jobs` table; the app polls both.

    jobs/job-0007/
      job.json        what the worker needs: config, base model path, dataset version folder
      progress.jsonl  one JSON object per line: {"kind": "train"|"eval"|"step"|"log"|..., ...}
      worker.log      the worker's stdout/stderr (tracebacks land here)
      checkpoints/    Trainer checkpoints (adapter + optimizer + scheduler state)
      tensorboard/    TensorBoard event files

States: queued -> starting -> running -> succeeded | failed | cancelled.
A running job whose process is gone becomes `failed` when this manager started it and saw it
die (killed, crashed), or `interrupted` when it was found so after a restart of the app;
interrupted, failed and cancelled jobs can be resumed from their last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from assistant.db import execute_script, utcnow
from assistant.errors import NotFoundError, ValidationError
from assistant.workspace import Workspace, write_atomic

from .config import TrainConfig, default_threads
from .registry import AdapterRegistry
from .trainer import last_checkpoint

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
ACTIVE_STATES = ("queued", "starting", "running")
RESUMABLE_STATES = ("interrupted", "failed", "cancelled")
TERMINAL_STATES = ("succeeded", "failed", "cancelled", "interrupted")
DEFAULT_FAMILY = "tailor"


def _m001_jobs(conn: sqlite3.Connection) -> None:
    execute_script(conn, """
        CREATE TABLE tune_jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            status TEXT NOT NULL CHECK (status IN
                ('queued', 'starting', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
            family TEXT NOT NULL,
            adapter_name TEXT,
            activate INTEGER NOT NULL DEFAULT 1,
            base_model TEXT NOT NULL,
            base_model_path TEXT NOT NULL,
            dataset_version TEXT NOT NULL,
            dataset_path TEXT NOT NULL,
            dataset_hash TEXT,
            config_json TEXT NOT NULL,
            threads INTEGER,
            job_dir TEXT NOT NULL DEFAULT '',
            pid INTEGER,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            updated_at TEXT NOT NULL,
            step INTEGER NOT NULL DEFAULT 0,
            total_steps INTEGER,
            epoch REAL,
            loss REAL,
            eval_loss REAL,
            best_step INTEGER,
            best_eval_loss REAL,
            tokens_per_s REAL,
            eta_s REAL,
            error TEXT,
            message TEXT NOT NULL DEFAULT '',
            resumes INTEGER NOT NULL DEFAULT 0,
            cancel_requested INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX tune_jobs_status ON tune_jobs(status, id);
    """)


MIGRATIONS = [_m001_jobs]


@dataclass
class Job:
    id: int
    status: str
    family: str
    adapter_name: str | None
    activate: bool
    base_model: str
    base_model_path: str
    dataset_version: str
    dataset_path: str
    dataset_hash: str | None
    config: dict
    threads: int | None
    job_dir: Path
    pid: int | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    updated_at: str
    step: int
    total_steps: int | None
    epoch: float | None
    loss: float | None
    eval_loss: float | None
    best_step: int | None
    best_eval_loss: float | None
    tokens_per_s: float | None
    eta_s: float | None
    error: str | None
    message: str
    resumes: int
    cancel_requested: bool

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATES

    @property
    def can_resume(self) -> bool:
        return self.status in RESUMABLE_STATES

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["job_dir"] = str(self.job_dir)
        return d


@dataclass
class Progress:
    """What the Tune tab draws: loss points, evaluation points and the log, from progress.jsonl."""
    job: Job
    train: list[dict] = field(default_factory=list)  # {"step", "epoch", "loss", "tokens_per_s", ...}
    eval: list[dict] = field(default_factory=list)  # {"step", "eval_loss"}
    log: list[str] = field(default_factory=list)


def read_progress(job_dir: Path) -> list[dict]:
    path = Path(job_dir) / "progress.jsonl"
    out = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a line being written right now
    except FileNotFoundError:
        pass
    return out


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _is_our_worker(pid: int | None, job_dir: str) -> bool:
    """The pid is alive and is still this job's worker (pids get reused after a reboot)."""
    if not process_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True  # no /proc (macOS): trust the pid
    return "tuning.worker" in cmdline and Path(job_dir).name in cmdline


def accelerate_command(job_dir: Path | str, num_processes: int, *, num_machines: int = 1, machine_rank: int = 0,
                       main_process_ip: str | None = None, main_process_port: int | None = None,
                       mixed_precision: str | None = None, accelerate: str | None = None) -> list[str]:
    """The command line that runs a job on several GPUs (or machines) with `accelerate launch`:

        accelerate launch --num_processes 4 --num_machines 1 --multi_gpu -m tuning.worker JOB_DIR

    For several machines run it on each with its --machine_rank, the same --main_process_ip
    and --main_process_port, and a shared workspace folder. Only rank 0 writes progress and
    publishes the adapter."""
    if num_processes < 1 or num_machines < 1:
        raise ValidationError("num_processes and num_machines must be at least 1")
    if not 0 <= machine_rank < num_machines:
        raise ValidationError("machine_rank must be between 0 and num_machines - 1")
    if num_machines > 1 and not main_process_ip:
        raise ValidationError("several machines need main_process_ip (the address of machine 0)")
    if accelerate is None:
        candidate = Path(sys.executable).parent / "accelerate"
        accelerate = str(candidate) if candidate.exists() else "accelerate"
    cmd = [accelerate, "launch", "--num_processes", str(num_processes), "--num_machines", str(num_machines)]
    if num_processes > 1:
        cmd.append("--multi_gpu")
    if num_machines > 1:
        cmd += ["--machine_rank", str(machine_rank), "--main_process_ip", main_process_ip]
    if main_process_port:
        cmd += ["--main_process_port", str(main_process_port)]
    if mixed_precision:
        if mixed_precision not in ("no", "fp16", "bf16"):
            raise ValidationError("mixed_precision must be no, fp16 or bf16")
        cmd += ["--mixed_precision", mixed_precision]
    return cmd + ["-m", "tuning.worker", str(job_dir)]


class JobStore:
    """The tune_jobs table. Used by the manager (app/CLI) and by the worker process."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        workspace.db.migrate("tuning_jobs", MIGRATIONS)

    def _job(self, row) -> Job:
        d = dict(row)
        d["config"] = json.loads(d.pop("config_json"))
        d["job_dir"] = Path(d["job_dir"])
        d["activate"] = bool(d["activate"])
        d["cancel_requested"] = bool(d["cancel_requested"])
        return Job(**d)

    def get(self, job_id: int) -> Job:
        with self.workspace.db.read() as conn:
            row = conn.execute("SELECT * FROM tune_jobs WHERE id=?", (int(job_id),)).fetchone()
        if row is None:
            raise NotFoundError(f"training job {job_id} does not exist")
        return self._job(row)

    def list(self, limit: int = 100, status: str | None = None) -> list[Job]:
        sql, args = "SELECT * FROM tune_jobs", []
        if status:
            sql, args = sql + " WHERE status=?", [status]
        with self.workspace.db.read() as conn:
            return [self._job(r) for r in conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, int(limit)))]

    def update(self, job_id: int, **values) -> None:
        values["updated_at"] = utcnow()
        cols = ", ".join(f"{k}=?" for k in values)
        with self.workspace.db.transaction() as conn:
            conn.execute(f"UPDATE tune_jobs SET {cols} WHERE id=?", (*values.values(), int(job_id)))

    def finish(self, job_id: int, status: str, *, error: str | None = None, only_if: tuple = (), **values) -> bool:
        """Move a job to a final state; with `only_if`, only from one of those states
        (so the worker's own verdict is never overwritten by a later guess)."""
        assert status in TERMINAL_STATES
        values.update(status=status, finished_at=utcnow(), updated_at=utcnow(), eta_s=None)
        if error is not None:
            values["error"] = error
        cols = ", ".join(f"{k}=?" for k in values)
        sql = f"UPDATE tune_jobs SET {cols} WHERE id=?"
        args = [*values.values(), int(job_id)]
        if only_if:
            sql += f" AND status IN ({','.join('?' * len(only_if))})"
            args += list(only_if)
        with self.workspace.db.transaction() as conn:
            return conn.execute(sql, args).rowcount > 0


class JobManager:
    """Queue and runner. One job runs at a time; others wait as `queued`. In the app a
    background thread calls `pump()` every few seconds; the worker also starts the next
    queued job when it ends, so the queue moves even when only the CLI is used."""

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

    # ---- submitting ------------------------------------------------------------------------
    def submit(self, *, base_model: str, base_model_path: Path | str, dataset_version, dataset_path: Path | str,
               dataset_hash: str | None = None, config: TrainConfig | None = None, family: str | None = None,
               activate: bool = True, start: bool = True) -> Job:
        """Queue a job (and start it if nothing is running). `dataset_version` is the version
        id; `dataset_path` its folder with train.jsonl / validation.jsonl."""
        config = (config or TrainConfig()).validate()
        family = (family or DEFAULT_FAMILY).strip()
        self.registry.next_name(family)  # validates the name early, before anything runs
        dataset_path = Path(dataset_path)
        if not (dataset_path / "train.jsonl").is_file():
            raise ValidationError(f"dataset version {dataset_version} has no train.jsonl in {dataset_path}")
        if not Path(base_model_path).is_dir():
            raise ValidationError(f"base model folder {base_model_path} does not exist")
        threads = config.threads or default_threads(self.serving)
        now = utcnow()
        with self.workspace.db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO tune_jobs(status, family, activate, base_model, base_model_path, dataset_version,"
                " dataset_path, dataset_hash, config_json, threads, created_at, updated_at, message)"
                " VALUES ('queued',?,?,?,?,?,?,?,?,?,?,?,?)",
                (family, int(activate), base_model, str(base_model_path), str(dataset_version), str(dataset_path),
                 dataset_hash, json.dumps(config.to_dict()), threads, now, now, "waiting for its turn"))
            job_id = cur.lastrowid
            job_dir = self.workspace.jobs_dir / f"job-{job_id:04d}"
            conn.execute("UPDATE tune_jobs SET job_dir=? WHERE id=?", (str(job_dir), job_id))
        job_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(job_dir / "job.json", json.dumps({
            "job_id": job_id, "workspace": str(self.workspace.root)}, indent=2))
        if start:
            self.pump()
        return self.store.get(job_id)

    # ---- running ---------------------------------------------------------------------------
    def pump(self) -> Job | None:
        """Reconcile running jobs with their processes, then start the next queued job if
        none is running. Returns the job started, if any."""
        with self._lock:
            self.reconcile()
            job = self._claim_next()
            if job is None:
                return None
            try:
                self._launch(job)
            except Exception as exc:  # noqa: BLE001 - e.g. the interpreter cannot be started
                self.store.finish(job.id, "failed", error=f"could not start the worker: {exc}")
                raise
            return self.store.get(job.id)

    def _claim_next(self) -> Job | None:
        with self.workspace.db.transaction() as conn:
            busy = conn.execute("SELECT id FROM tune_jobs WHERE status IN ('starting','running') LIMIT 1").fetchone()
            if busy is not None:
                return None
            row = conn.execute("SELECT id FROM tune_jobs WHERE status='queued' ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return None
            conn.execute("UPDATE tune_jobs SET status='starting', updated_at=?, message=?, error=NULL,"
                         " cancel_requested=0 WHERE id=?", (utcnow(), "starting the worker", row["id"]))
        return self.store.get(row["id"])

    def command(self, job: Job) -> list[str]:
        n = int(job.config.get("num_processes", 1) or 1)
        if n > 1:
            return accelerate_command(job.job_dir, n)
        return [sys.executable, "-m", "tuning.worker", str(job.job_dir)]

    def _launch(self, job: Job) -> None:
        job.job_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        threads = str(job.threads or default_threads(self.serving))
        env.update(TAILOR_HOME=str(self.workspace.root), OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
                   TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])))
        with open(job.job_dir / "worker.log", "ab") as out:
            proc = subprocess.Popen(self.command(job), cwd=str(REPO_ROOT), env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self._procs[job.id] = proc
        # The worker sets running itself; the pid is recorded now so cancel works at once.
        self.store.update(job.id, pid=proc.pid, started_at=job.started_at or utcnow())

    def reconcile(self) -> list[int]:
        """Mark jobs whose worker is gone. Returns the ids changed."""
        changed = []
        for job_id, proc in list(self._procs.items()):  # reap workers that ended on their own
            if proc.poll() is not None and self.store.get(job_id).status not in ("starting", "running"):
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
                    ok = self.store.finish(job.id, "cancelled", only_if=("starting", "running"),
                                           message="cancelled (the worker was stopped)")
                else:
                    how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
                    ok = self.store.finish(job.id, "failed", only_if=("starting", "running"),
                                           error=f"the training process {how}; see {job.job_dir / 'worker.log'}",
                                           message="failed")
                if ok:
                    changed.append(job.id)
                continue
            if _is_our_worker(job.pid, str(job.job_dir)):
                continue  # still running (started before this app, or by the CLI)
            if job.status == "starting" and not job.pid and _age_s(job.updated_at) < 60:
                continue  # another process is starting it right now
            if self.store.finish(job.id, "interrupted", only_if=("starting", "running"),
                                 message="interrupted: its process is gone (app or machine restarted?); "
                                         "resume it to continue from the last checkpoint"):
                changed.append(job.id)
        return changed

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
        self.store.update(job.id, cancel_requested=1, message="stopping after the current step…")
        pid = job.pid
        if pid:
            _signal_group(pid, signal.SIGTERM)
        timeout = self.kill_timeout if timeout is None else timeout
        if wait:
            self._kill_after(job.id, pid, timeout)
        else:
            threading.Thread(target=self._kill_after, args=(job.id, pid, timeout), daemon=True,
                             name=f"tailor-cancel-{job.id}").start()
        return self.store.get(job.id)

    def _kill_after(self, job_id: int, pid: int | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        proc = self._procs.get(job_id)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                break
            if proc is None and not process_alive(pid):
                break
            time.sleep(0.2)
        else:
            if pid:
                log.warning("job %s did not stop within %.0f s; killing it", job_id, timeout)
                _signal_group(pid, signal.SIGKILL)
                if proc is not None:
                    proc.wait(10)
        self.store.finish(job_id, "cancelled", only_if=("starting", "running"),
                          message="cancelled (killed after the grace period)")
        self.pump()

    def resume(self, job_id: int) -> Job:
        """Queue an interrupted, failed or cancelled job again; it continues from its last
        checkpoint (weights, optimizer and scheduler state, step count) when it has one."""
        job = self.store.get(job_id)
        if not job.can_resume:
            raise ValidationError(f"job {job.id} is {job.status}; only interrupted, failed or cancelled jobs "
                                  "can be resumed")
        ckpt = last_checkpoint(job.job_dir / "checkpoints")
        with self.workspace.db.transaction() as conn:
            conn.execute("UPDATE tune_jobs SET status='queued', finished_at=NULL, error=NULL, cancel_requested=0,"
                         " resumes=resumes+1, pid=NULL, updated_at=?, message=? WHERE id=?",
                         (utcnow(), f"queued to resume from {ckpt.name}" if ckpt else
                          "queued to start again (no checkpoint was saved)", job.id))
        self.pump()
        return self.store.get(job.id)

    def wait(self, job_id: int, *, poll: float = 1.0, timeout: float | None = None,
             on_update: Callable[[Job], None] | None = None) -> Job:
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

    def progress(self, job_id: int, log_lines: int = 200) -> Progress:
        job = self.store.get(job_id)
        result = Progress(job)
        for item in read_progress(job.job_dir):
            kind = item.get("kind")
            if kind == "resume":  # steps after the checkpoint are trained again: drop the lost ones
                cut = item.get("from_step", 0)
                result.train = [p for p in result.train if p["step"] <= cut]
                result.eval = [p for p in result.eval if p["step"] <= cut]
            if kind == "train" and item.get("loss") is not None:
                result.train.append(item)
            elif kind == "eval" and item.get("eval_loss") is not None:
                result.eval.append(item)
            if item.get("message"):
                result.log.append(f"{item.get('time', '')[11:19]}  {item['message']}")
        if job.status == "failed":
            tail = _tail(job.job_dir / "worker.log", 30)
            if tail:
                result.log.append("---- worker.log (last lines) ----")
                result.log.extend(tail)
        result.log = result.log[-log_lines:]
        return result

    # ---- background pump (the app) ---------------------------------------------------------
    def start_background(self, interval: float = 2.0) -> None:
        if self._thread is not None:
            return
        self.recover()

        def loop():
            while not self._stop.wait(interval):
                try:
                    self.pump()
                except Exception:  # noqa: BLE001 - keep the app's queue alive
                    log.exception("job queue pump failed")

        self._thread = threading.Thread(target=loop, daemon=True, name="tailor-job-queue")
        self._thread.start()

    def stop_background(self) -> None:
        self._stop.set()


def _signal_group(pid: int, sig: int) -> None:
    """Signal the worker's process group (it was started in its own session), so helper
    processes it started go too; fall back to the pid alone."""
    try:
        os.killpg(os.getpgid(pid), sig)
    except (ProcessLookupError, PermissionError, OSError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _age_s(iso: str) -> float:
    from datetime import datetime, timezone

    try:
        return (datetime.now(timezone.utc) - datetime.fromisoformat(iso)).total_seconds()
    except ValueError:
        return 1e9


def _tail(path: Path, n: int) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8000))
            return fh.read().decode("utf-8", errors="replace").splitlines()[-n:]
    except OSError:
        return []


@dataclass
class TuneService:
    """What the Tune tab and `tailor tune` call: one click = snapshot the current dataset,
    queue a job on it with the default (or given) config."""
    workspace: Workspace
    base_model: str
    base_model_path: Path
    jobs: JobManager
    registry: AdapterRegistry

    def versions(self):
        from .versions import DatasetVersions

        return DatasetVersions(self.workspace)

    def start(self, *, dataset_version: int | None = None, config: TrainConfig | None = None,
              family: str | None = None, activate: bool = True) -> Job:
        versions = self.versions()
        version = versions.get(dataset_version) if dataset_version is not None else \
            versions.snapshot("taken for training")
        if not version.counts.get("train"):
            raise ValidationError(f"dataset version {version.id} has no training examples")
        return self.jobs.submit(base_model=self.base_model, base_model_path=self.base_model_path,
                                dataset_version=version.id, dataset_path=version.path,
                                dataset_hash=version.content_hash, config=config, family=family,
                                activate=activate)


def open_tuning(workspace: Workspace, base_model: str, base_model_path: Path | str, *,
                serving: bool = False) -> TuneService:
    """`serving=True` inside the app: jobs get cores-1 threads and the caller should run
    `service.jobs.start_background()` so queued jobs start when the current one ends."""
    jobs = JobManager(workspace, serving=serving)
    return TuneService(workspace, base_model, Path(base_model_path), jobs, jobs.registry)
