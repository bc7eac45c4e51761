"""The worker is killed (SIGKILL) and the app restarts mid-job: the app side stays up, the job
is marked (failed / interrupted), the adapter already published stays active, and an
interrupted job resumes from its last checkpoint with its optimizer state."""

import os
import signal

from tuning.jobs import JobManager
from tuning.progress import read_progress

from ..conftest import random_lora


def _publish_previous(manager, tiny_model_dir):
    """A real adapter published and active before the job that will die."""
    write = random_lora(tiny_model_dir, target_modules=["q_proj"], task_type="CAUSAL_LM")
    manager.registry.publish("previous-v1", write, base_model="tiny")
    manager.registry.activate("previous-v1")
    return (manager.registry.dir / "previous-v1" / "adapter_model.safetensors").read_bytes()


def test_sigkill_marks_failed_and_keeps_the_previous_adapter(
    workspace, tune_manager, tiny_model_dir, tune_version_dir, tune_helpers, wait_until
):
    weights = _publish_previous(tune_manager, tiny_model_dir)
    job = tune_helpers.submit(tune_manager, tiny_model_dir, tune_version_dir, max_steps=100000, eval_steps=50000)
    wait_until(lambda: tune_manager.get(job.id).step >= 2, timeout=180)
    os.kill(tune_manager.get(job.id).pid, signal.SIGKILL)
    dead = wait_until(
        lambda: (tune_manager.pump(), tune_manager.get(job.id))[1].status == "failed" and tune_manager.get(job.id),
        timeout=30,
    )
    assert "killed by signal 9" in dead.error
    assert tune_manager.registry.active() == "previous-v1"
    assert [a.name for a in tune_manager.registry.list()] == ["previous-v1"]
    assert (tune_manager.registry.dir / "previous-v1" / "adapter_model.safetensors").read_bytes() == weights
    assert not [p for p in tune_manager.registry.dir.iterdir() if p.name.startswith(".")]  # no half-published folder
    assert any("killed by signal 9" in line or "failed" in line for line in [dead.message, dead.error])


def test_app_restart_marks_interrupted_and_resume_continues_from_checkpoint(
    workspace, tiny_model_dir, tune_version_dir, tune_helpers, wait_until
):
    app = JobManager(workspace)
    job = tune_helpers.submit(app, tiny_model_dir, tune_version_dir, max_steps=150, eval_steps=10, save_total_limit=3)
    ckpt_dir = job.job_dir / "checkpoints"
    wait_until(lambda: list(ckpt_dir.glob("checkpoint-*/trainer_state.json")), timeout=180)
    pid = app.get(job.id).pid
    # The machine goes down: the worker dies with the app, and a new app starts.
    os.killpg(pid, signal.SIGKILL)
    app._procs[job.id].wait(10)
    del app
    restarted = JobManager(workspace)
    assert restarted.recover() == [job.id]
    interrupted = restarted.get(job.id)
    assert interrupted.status == "interrupted" and interrupted.can_resume
    from tuning.trainer import last_checkpoint

    ckpt = last_checkpoint(ckpt_dir)
    from_step = int(ckpt.name.split("-")[1])
    assert (ckpt / "optimizer.pt").is_file() and (ckpt / "scheduler.pt").is_file()

    resumed = restarted.resume(job.id)
    assert resumed.status in ("starting", "running") and resumed.resumes == 1
    done = restarted.wait(job.id, poll=0.2, timeout=300)
    assert done.status == "succeeded", done.error
    assert done.step == 150 and done.adapter_name == "tailor-v1"
    records = read_progress(done.job_dir)
    marker = [r for r in records if r["kind"] == "resume"]
    assert marker and marker[-1]["from_step"] == from_step
    after = records[records.index(marker[-1]) :]
    begin = next(r for r in after if r["kind"] == "begin")
    assert begin["step"] == from_step  # the Trainer restored step, optimizer and scheduler from the checkpoint
    first_trained = next(r for r in after if r["kind"] == "train")
    assert first_trained["step"] == from_step + 1
    # The curve the tab draws has each step once, the re-run steps replacing the lost ones.
    steps = [p["step"] for p in restarted.progress(job.id).train]
    assert steps == sorted(set(steps)) and steps[-1] == 150
