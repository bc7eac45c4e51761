"""The `tune_jobs` table: one row per training job, its schema and migrations (the
"tuning_jobs" namespace), the Job record and the JobStore that reads and writes rows. Used by
the queue (tuning/jobs.py, in the app and the CLI) and by the worker process.

States: queued -> starting -> running -> succeeded | failed | cancelled.
A running job whose process is gone becomes `failed` when the manager that started it saw it
die (killed, crashed), or `interrupted` when it was found so after a restart of the app;
interrupted, failed and cancelled jobs can be resumed from their last checkpoint.

Paths in `tune_jobs` (job_dir, and dataset_path / base_model_path when they lie inside the
workspace) are stored relative to the workspace, so a restored backup or a moved folder
points at its own files.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from assistant.db import execute_script, utcnow
from assistant.errors import NotFoundError
from assistant.workspace import Workspace

from .config import TrainConfig

ACTIVE_STATES = ("queued", "starting", "running")
RESUMABLE_STATES = ("interrupted", "failed", "cancelled")
TERMINAL_STATES = ("succeeded", "failed", "cancelled", "interrupted")


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

    def grounding(self) -> dict | None:
        """What this job mixes into its training data from the documents (tuning/grounding_mix.py),
        as written when it was queued; None for a job queued without that step."""
        from .grounding_files import read_grounding_summary

        return read_grounding_summary(self.job_dir) if self.job_dir != Path() else None

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["job_dir"] = str(self.job_dir)
        d["grounding"] = self.grounding()
        return d


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

    # ---- the queue's transitions (tuning/jobs.py decides when) ---------------------------
    def insert(
        self,
        *,
        family: str,
        activate: bool,
        base_model: str,
        base_model_path: Path | str,
        dataset_version,
        dataset_path: Path | str,
        dataset_hash: str | None,
        config: TrainConfig,
        threads: int,
        prepare: Callable[[Path], None] | None = None,
    ) -> tuple[int, Path]:
        """A new queued job; returns its id and its folder (jobs/job-NNNN). `prepare(job_dir)`
        writes the job's own input files (its grounding examples) into the folder while the
        row is not yet committed, so no worker can claim the job before they exist; when it
        fails, nothing is queued and the folder is removed."""
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
                    self.to_db(base_model_path),
                    str(dataset_version),
                    self.to_db(dataset_path),
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
            conn.execute("UPDATE tune_jobs SET job_dir=? WHERE id=?", (self.to_db(job_dir), job_id))
            if prepare is not None:
                try:
                    prepare(job_dir)
                except BaseException:
                    shutil.rmtree(job_dir, ignore_errors=True)
                    raise
        return job_id, job_dir

    def any_active(self) -> bool:
        with self.workspace.db.read() as conn:
            return (
                conn.execute(
                    "SELECT 1 FROM tune_jobs WHERE status IN ('queued','starting','running') LIMIT 1"
                ).fetchone()
                is not None
            )

    def claim_next(self) -> Job | None:
        """The oldest queued job, moved to `starting`, when no job is starting or running."""
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
        return self.get(row["id"])

    def requeue(self, job_id: int, message: str) -> None:
        """Queue an ended job again (a resume), counting the resume."""
        with self.workspace.db.transaction() as conn:
            conn.execute(
                "UPDATE tune_jobs SET status='queued', finished_at=NULL, error=NULL, cancel_requested=0,"
                " resumes=resumes+1, pid=NULL, updated_at=?, message=? WHERE id=?",
                (utcnow(), message, int(job_id)),
            )
