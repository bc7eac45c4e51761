"""Two training processes on this CPU under `accelerate launch` (DDP over gloo), on the tiny
model: both ranks train, rank 0 alone writes progress and publishes; a cancelled run stops both
ranks after the same step, saves one whole checkpoint and resumes from it; a killed launcher
takes its ranks with it, and the job resumes from its last checkpoint again."""

import os
import signal

from tuning.processes import worker_job_dir
from tuning.progress import read_progress
from tuning.trainer import last_checkpoint


def _rank_pids(job_dir) -> list[int]:
    """Every live process training `job_dir` (the launcher and its ranks)."""
    target = os.path.realpath(job_dir)
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and worker_job_dir(int(p)) == target]


def _steps_saved(ckpt_dir) -> int:
    ckpt = last_checkpoint(ckpt_dir)
    return int(ckpt.name.split("-")[1]) if ckpt else 0


def test_two_gloo_processes_train_publish_once_and_resume_after_cancel(
    workspace, tune_manager, tiny_model_dir, tune_version_dir, tune_helpers, wait_until
):
    job = tune_helpers.submit(
        tune_manager,
        tiny_model_dir,
        tune_version_dir,
        num_processes=2,
        distributed="ddp",
        threads=2,
        max_steps=32,
        eval_steps=4,
        batch_size=2,
    )
    yaml_text = (job.job_dir / "accelerate.yaml").read_text()
    assert "distributed_type: MULTI_GPU" in yaml_text and "use_cpu: true" in yaml_text
    ckpt_dir = job.job_dir / "checkpoints"
    wait_until(lambda: list(ckpt_dir.glob("checkpoint-*/rng_state_1.pth")), timeout=180)
    cancelled = tune_manager.cancel(job.id, wait=True, timeout=60)
    assert cancelled.status == "cancelled" and "killed" not in cancelled.message, cancelled  # stopped gracefully
    assert not _rank_pids(job.job_dir)  # the launcher and both ranks are gone
    ckpt = last_checkpoint(ckpt_dir)
    # one checkpoint, saved by the two ranks together: rank 0's weights and optimizer, each rank's RNG
    assert {p.name for p in ckpt.iterdir()} >= {"optimizer.pt", "scheduler.pt", "rng_state_0.pth", "rng_state_1.pth"}
    from_step = int(ckpt.name.split("-")[1])
    assert from_step < 32 and tune_manager.registry.list() == []
    log = (job.job_dir / "worker.log").read_text()
    assert "rank 0 of 2" in log and "rank 1 of 2" in log and "ddp over gloo" in log

    resumed = tune_manager.resume(job.id)
    # Killed: SIGKILL to the job's process group (the machine going down, a cancel's last resort)
    # once a checkpoint after the resume is saved. The row's pid is the launcher's, not rank 0's.
    wait_until(lambda: _steps_saved(ckpt_dir) > from_step, timeout=180)
    pid = tune_manager.get(job.id).pid
    assert pid == tune_manager._procs[job.id].pid
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not _rank_pids(job.job_dir), timeout=30)  # the ranks died with their launcher
    dead = wait_until(
        lambda: (tune_manager.pump(), tune_manager.get(job.id))[1].status == "failed" and tune_manager.get(job.id),
        timeout=30,
    )
    assert "killed by signal 9" in dead.error and tune_manager.registry.list() == []
    from_step = _steps_saved(ckpt_dir)
    assert from_step < 32

    resumed = tune_manager.resume(job.id)
    done = tune_manager.wait(resumed.id, poll=0.2, timeout=240)
    assert done.status == "succeeded", done.error
    assert done.step == 32 and done.adapter_name == "tailor-v1" and done.resumes == 2
    # exactly once: one adapter, one "done" record, each step's loss written once per run
    assert [a.name for a in tune_manager.registry.list()] == ["tailor-v1"]
    card = tune_manager.registry.get("tailor-v1").metrics
    assert card["processes"] == 2 and card["distributed"] == "ddp" and card["threads"] == 1  # 2 threads split over 2
    assert [p.name for p in tune_manager.registry.dir.iterdir() if p.is_dir()] == [
        "tailor-v1"
    ]  # no half-published copy
    records = read_progress(done.job_dir)
    assert [r["kind"] for r in records].count("done") == 1
    marker = [r for r in records if r["kind"] == "resume"]
    assert marker and marker[-1]["from_step"] == from_step
    after = records[records.index(marker[-1]) :]
    assert [r["step"] for r in after if r["kind"] == "train"] == list(range(from_step + 1, 33))
    wait_until(lambda: not _rank_pids(job.job_dir), timeout=60)  # every rank exits once rank 0 has published
