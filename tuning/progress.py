"""A training job's progress file, JOB_DIR/progress.jsonl: written by the worker process
(`ProgressWriter`), read by the app and the CLI (`read_progress`, `training_progress`), so a
page reloaded or an app restarted mid-job draws the same curves.

    jobs/job-0007/
      job.json        what the worker needs: the job id and its workspace (tuning/jobs.py)
      progress.jsonl  one JSON object per line, appended and flushed as training goes:
                      {"time": ISO 8601 UTC, "kind": ..., ...}, kind one of
                        "begin"   step, total                 training starts (or resumes)
                        "step"    step, total, epoch, eta_s
                        "train"   step, epoch, loss, learning_rate, tokens, tokens_per_s, ...
                        "eval"    step, eval_loss
                        "resume"  from_step                   later steps are trained again
                        "summary" train_loss, ...             the Trainer's final numbers
                        "log"     message                     a line of the job's log
                        "done"    adapter, metrics
      worker.log      the worker's stdout/stderr (tracebacks land here)
      checkpoints/    Trainer checkpoints (adapter + optimizer + scheduler state)
      tensorboard/    TensorBoard event files

A reader may meet a line that is still being written: it is skipped until it is complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from assistant.db import utcnow

from .job_store import Job

PROGRESS_FILE = "progress.jsonl"


class ProgressWriter:
    """Appends one JSON object per line (flushed at once: the app reads it while we write)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def write(self, kind: str, **data) -> None:
        if not self.enabled:
            return
        record = {"time": utcnow(), "kind": kind, **data}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()

    def log(self, message: str, **data) -> None:
        print(message, flush=True)
        self.write("log", message=message, **data)


def read_progress(job_dir: Path) -> list[dict]:
    path = Path(job_dir) / PROGRESS_FILE
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


@dataclass
class TrainingProgress:
    """What the Tune tab draws: loss points, evaluation points and the log, from progress.jsonl."""

    job: Job
    train: list[dict] = field(default_factory=list)  # {"step", "epoch", "loss", "tokens_per_s", ...}
    eval: list[dict] = field(default_factory=list)  # {"step", "eval_loss"}
    log: list[str] = field(default_factory=list)


def training_progress(job: Job, log_lines: int = 200) -> TrainingProgress:
    """The job's curves and its last `log_lines` log lines (for a failed job ending with the
    last lines of worker.log)."""
    result = TrainingProgress(job)
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


def _tail(path: Path, n: int) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8000))
            return fh.read().decode("utf-8", errors="replace").splitlines()[-n:]
    except OSError:
        return []
