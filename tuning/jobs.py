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

Paths in `tune_jobs` (job_dir, and dataset_path / base_model_path when they lie inside the
workspace) are stored relative to the workspace, so a restored backup or a moved folder
points at its own files. A process is only ever signalled after checking that it is this
workspace's worker for that job: its command line names this job's folder, resolved to the
full path (`_is_our_worker`). A pid alone proves nothing: after `tailor import` into a new
folder the copy's rows carry the original's pids, whose workers keep training the original;
the copy sees those jobs as `interrupted` and never signals them.

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
    execute_script(
        conn,
        """
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
    """,
    )


def _relative_to_db_folder(conn: sqlite3.Connection, value: str) -> str:
    row = conn.execute("PRAGMA database_list").fetchone()
    root = Path(row[2]).resolve().parent if row and row[2] else None
    path = Path(value)
    if root is None or not path.is_absolute():
        return value
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return value


def _m002_relative_paths(conn: sqlite3.Connection) -> None:
    """Job folders stored as absolute paths become relative to the workspace. A job folder is
    always <workspace>/jobs/job-NNNN, so an absolute one that names another folder (a backup
    restored elsewhere by an older Tailor) is rewritten too; dataset and base model paths
    become relative only when they lie inside this workspace."""
    rows = conn.execute("SELECT id, job_dir, dataset_path, base_model_path FROM tune_jobs").fetchall()
    for job_id, job_dir, dataset_path, base_model_path in rows:
        name = f"job-{job_id:04d}"
        if job_dir and Path(job_dir).is_absolute():
            job_dir = f"jobs/{name}" if Path(job_dir).name == name else _relative_to_db_folder(conn, job_dir)
        conn.execute(
            "UPDATE tune_jobs SET job_dir=?, dataset_path=?, base_model_path=? WHERE id=?",
            (
                job_dir,
                _relative_to_db_folder(conn, dataset_path),
                _relative_to_db_folder(conn, base_model_path),
                job_id,
            ),
        )


MIGRATIONS = [_m001_jobs, _m002_relative_paths]


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


def _realpath(path: str, cwd: str | None = None) -> str:
    try:
        return os.path.realpath(os.path.join(cwd, path) if cwd else path)
    except (OSError, ValueError):
        return path


def worker_job_dir(pid: int | None) -> str | None:
    """The job folder (resolved, absolute) that process `pid` trains as a Tailor worker
    (`... -m tuning.worker JOB_DIR`, also under `accelerate launch`), or None when the process
    is gone, is not a worker, or cannot be inspected (another user's process)."""
    if not process_alive(pid):
        return None
    if os.path.isdir("/proc/self"):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        args = [a.decode(errors="surrogateescape") for a in raw.split(b"\0") if a]
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = None
    else:  # no /proc (macOS): ps prints the command line joined by spaces
        try:
            out = subprocess.run(
                ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=5, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
        _, sep, tail = out.partition(" tuning.worker ")
        return _realpath(tail.strip()) if sep and tail.strip() else None
    if "tuning.worker" not in args:
        return None
    i = args.index("tuning.worker")
    if i + 1 >= len(args):
        return None
    return _realpath(args[i + 1], cwd)


def _is_our_worker(pid: int | None, job_dir: Path | str) -> bool:
    """The pid is alive and is the worker of exactly this job folder: its command line names
    the same folder, compared as full resolved paths. (Comparing only the folder's name, as
    this once did, cannot tell a restored copy's job-0007 from the original's; pids also get
    reused after a reboot.)"""
    found = worker_job_dir(pid)
    return found is not None and found == _realpath(str(job_dir))


def accelerate_command(
    job_dir: Path | str,
    num_processes: int,
    *,
    num_machines: int = 1,
    machine_rank: int = 0,
    main_process_ip: str | None = None,
    main_process_port: int | None = None,
    mixed_precision: str | None = None,
    accelerate: str | None = None,
) -> list[str]:
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

    def to_db(self, path: Path | str) -> str:
        """How a path is stored: relative to the workspace when it lies inside it."""
        path = Path(path)
        try:
            return path.resolve().relative_to(self.workspace.root).as_posix()
        except ValueError:
            return str(path)

    def from_db(self, value: str) -> Path:
        """A stored path as an absolute one (rows written before paths were relative keep
        their absolute paths, which are read as they are)."""
        path = Path(value)
        return path if path.is_absolute() else self.workspace.root / path

    def owns(self, path: Path | str) -> bool:
        try:
            Path(path).resolve().relative_to(self.workspace.root)
        except ValueError:
            return False
        return True

    def _job(self, row) -> Job:
        d = dict(row)
        d["config"] = json.loads(d.pop("config_json"))
        d["job_dir"] = self.from_db(d["job_dir"]) if d["job_dir"] else Path()
        d["dataset_path"] = str(self.from_db(d["dataset_path"]))
        d["base_model_path"] = str(self.from_db(d["base_model_path"]))
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
    ) -> Job:
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
                (
                    family,
                    int(activate),
                    base_model,
                    self.store.to_db(base_model_path),
                    str(dataset_version),
                    self.store.to_db(dataset_path),
                    dataset_hash,
                    json.dumps(config.to_dict()),
                    threads,
                    now,
                    now,
                    "waiting for its turn",
                ),
            )
            job_id = cur.lastrowid
            assert job_id is not None  # an INSERT into a table with a rowid
            job_dir = self.workspace.jobs_dir / f"job-{job_id:04d}"
            conn.execute("UPDATE tune_jobs SET job_dir=? WHERE id=?", (self.store.to_db(job_dir), job_id))
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
                job = self._claim_next()
                if job is None:
                    return None
                try:
                    self._launch(job)
                except Exception as exc:
                    self.store.finish(job.id, "failed", error=f"could not start the worker: {exc}")
                    raise
                return self.store.get(job.id)
        finally:
            if self._idle and self._any_active():
                self._wake.set()  # the background thread slept with nothing to watch: watch this job

    def _any_active(self) -> bool:
        with self.workspace.db.read() as conn:
            return (
                conn.execute(
                    "SELECT 1 FROM tune_jobs WHERE status IN ('queued','starting','running') LIMIT 1"
                ).fetchone()
                is not None
            )

    def _claim_next(self) -> Job | None:
        with self.workspace.db.transaction() as conn:
            busy = conn.execute("SELECT id FROM tune_jobs WHERE status IN ('starting','running') LIMIT 1").fetchone()
            if busy is not None:
                return None
            row = conn.execute("SELECT id FROM tune_jobs WHERE status='queued' ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE tune_jobs SET status='starting', updated_at=?, message=?, error=NULL,"
                " cancel_requested=0 WHERE id=?",
                (utcnow(), "starting the worker", row["id"]),
            )
        return self.store.get(row["id"])

    def command(self, job: Job) -> list[str]:
        n = int(job.config.get("num_processes", 1) or 1)
        if n > 1:
            return accelerate_command(job.job_dir, n)
        return [sys.executable, "-m", "tuning.worker", str(job.job_dir)]

    def _launch(self, job: Job) -> None:
        if not self.store.owns(job.job_dir):
            raise ValidationError(
                f"job {job.id}'s folder {job.job_dir} is outside this workspace "
                f"({self.workspace.root}); it was copied from another workspace"
            )
        job.job_dir.mkdir(parents=True, exist_ok=True)
        self._write_spec(job.id, job.job_dir)
        env = dict(os.environ)
        threads = str(job.threads or default_threads(self.serving))
        env.update(
            TAILOR_HOME=str(self.workspace.root),
            OMP_NUM_THREADS=threads,
            MKL_NUM_THREADS=threads,
            TOKENIZERS_PARALLELISM="false",
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        )
        with open(job.job_dir / "worker.log", "ab") as out:
            proc = subprocess.Popen(
                self.command(job),
                cwd=str(REPO_ROOT),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
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
            if _is_our_worker(job.pid, job.job_dir):
                continue  # still running (started before this app, or by the CLI)
            if job.status == "starting" and not job.pid and _age_s(job.updated_at) < 60:
                continue  # another process is starting it right now
            if self.store.finish(
                job.id, "interrupted", only_if=("starting", "running"), message=self._gone_message(job, "interrupted")
            ):
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
        return bool(job.pid) and _is_our_worker(job.pid, job.job_dir)

    def _signal(self, job: Job, sig: int) -> bool:
        """Signal the job's worker (its process group), only after checking it is this
        workspace's worker for this job. Returns whether a signal was sent."""
        proc = self._procs.get(job.id)
        if proc is not None and proc.poll() is None:
            _signal_group(proc.pid, sig)  # started by us in its own session: its group is its pid
            return True
        pid = self.store.get(job.id).pid or job.pid  # the worker records its own pid when it starts
        if pid and _is_our_worker(pid, job.job_dir):
            _signal_group(pid, sig)
            return True
        return False

    def _kill_after(self, job: Job, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        proc = self._procs.get(job.id)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                break
            if proc is None and not self._owns_worker(self.store.get(job.id)):
                break
            time.sleep(0.2)
        else:
            if self._signal(job, signal.SIGKILL):
                log.warning("job %s did not stop within %.0f s; killed it", job.id, timeout)
            if proc is not None:
                proc.wait(10)
        self.store.finish(
            job.id, "cancelled", only_if=("starting", "running"), message="cancelled (killed after the grace period)"
        )
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
        with self.workspace.db.transaction() as conn:
            conn.execute(
                "UPDATE tune_jobs SET status='queued', finished_at=NULL, error=NULL, cancel_requested=0,"
                " resumes=resumes+1, pid=NULL, updated_at=?, message=? WHERE id=?",
                (
                    utcnow(),
                    f"queued to resume from {ckpt.name}" if ckpt else "queued to start again (no checkpoint was saved)",
                    job.id,
                ),
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
                    active = self._any_active()
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

    def stop_background(self) -> None:
        self._stop.set()
        self._wake.set()


def _signal_group(pid: int, sig: int) -> None:
    """Signal the worker's process group (it was started in its own session), so helper
    processes it started go too; fall back to the pid alone. Callers check first that `pid`
    is this workspace's worker (`JobManager._signal`); the group is never our own."""
    try:
        group = os.getpgid(pid)
        if group == os.getpgrp():
            raise OSError("the worker shares our process group")  # signal the worker alone
        os.killpg(group, sig)
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

    def start(
        self,
        *,
        dataset_version: int | None = None,
        config: TrainConfig | None = None,
        family: str | None = None,
        activate: bool = True,
    ) -> Job:
        versions = self.versions()
        version = (
            versions.get(dataset_version) if dataset_version is not None else versions.snapshot("taken for training")
        )
        if not version.counts.get("train"):
            raise ValidationError(f"dataset version {version.id} has no training examples")
        return self.jobs.submit(
            base_model=self.base_model,
            base_model_path=self.base_model_path,
            dataset_version=version.id,
            dataset_path=version.path,
            dataset_hash=version.content_hash,
            config=config,
            family=family,
            activate=activate,
        )


def open_tuning(
    workspace: Workspace, base_model: str, base_model_path: Path | str, *, serving: bool = False
) -> TuneService:
    """`serving=True` inside the app: jobs get cores-1 threads and the caller should run
    `service.jobs.start_background()` so queued jobs start when the current one ends."""
    jobs = JobManager(workspace, serving=serving)
    return TuneService(workspace, base_model, Path(base_model_path), jobs, jobs.registry)
