"""The worker processes of training jobs, seen from outside: is a pid alive, is it the worker
of a given job folder, and signalling it.

A process is only ever signalled after checking that it is this workspace's worker for that
job: its command line names this job's folder, resolved to the full path (`is_our_worker`).
A pid alone proves nothing: after `tailor import` into a new folder the copy's rows carry
the original's pids, whose workers keep training the original; the copy sees those jobs as
`interrupted` and never signals them.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


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


def _cmdline(pid: int) -> bytes | None:
    """The raw /proc command line. It reads empty for a moment while a process is inside
    exec (the kernel closes the exec pipe, which wakes `Popen`, before it sets up the new
    argument list), so a worker started a moment ago is read again for up to half a second
    instead of being taken for a stranger. (Kernel threads read empty for good; no job row
    names one.)"""
    for _ in range(10):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if raw:
            return raw
        time.sleep(0.05)
    return raw


def worker_job_dir(pid: int | None) -> str | None:
    """The job folder (resolved, absolute) that process `pid` trains as a Tailor worker
    (`... -m tuning.worker JOB_DIR`, also under `accelerate launch`), or None when the process
    is gone, is not a worker, or cannot be inspected (another user's process)."""
    if pid is None or not process_alive(pid):
        return None
    if os.path.isdir("/proc/self"):
        raw = _cmdline(pid)
        if raw is None:
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


def is_our_worker(pid: int | None, job_dir: Path | str) -> bool:
    """The pid is alive and is the worker of exactly this job folder: its command line names
    the same folder, compared as full resolved paths. (Comparing only the folder's name, as
    this once did, cannot tell a restored copy's job-0007 from the original's; pids also get
    reused after a reboot.)"""
    found = worker_job_dir(pid)
    return found is not None and found == _realpath(str(job_dir))


def signal_group(pid: int, sig: int) -> None:
    """Signal the worker's process group (it was started in its own session), so helper
    processes it started go too; fall back to the pid alone. Callers check first that `pid`
    is this workspace's worker (`JobManager._signal`, tuning/jobs.py); the group is never our own."""
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
