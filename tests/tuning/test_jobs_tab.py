"""The Tune tab's formatting of job state (what a reloaded page shows comes from the DB and
the job folder only), and its Advanced-panel config."""

import pytest

from assistant.errors import ValidationError
from tuning.progress import TrainingProgress


def test_summary_plot_and_config_from_a_finished_job(
    workspace, tune_manager, tiny_model_dir, tune_version_dir, tune_helpers
):
    from ui.tune_tab import adapter_rows, config_from_inputs, job_summary, loss_frame

    assert "No training job yet" in job_summary(None)
    job = tune_helpers.submit(tune_manager, tiny_model_dir, tune_version_dir, max_steps=4, eval_steps=2)
    done = tune_manager.wait(job.id, poll=0.2, timeout=240)
    # a fresh manager, as after a browser reload or an app restart: everything comes back
    from tuning.jobs import JobManager

    progress = JobManager(workspace).progress(done.id)
    text = job_summary(progress.job)
    assert "succeeded" in text and "step **4/4**" in text and f"at step **{done.best_step}**" in text
    frame = loss_frame(progress)
    assert sorted(set(frame["series"])) == ["train", "validation"]
    assert list(frame[frame.series == "train"]["step"]) == [1, 2, 3, 4]
    assert list(frame[frame.series == "validation"]["step"]) == [2, 4]
    table = adapter_rows(tune_manager.registry.list())
    assert list(table["name"]) == ["tailor-v1"] and list(table["active"]) == ["●"]
    assert loss_frame(TrainingProgress(job=done)).empty

    cfg = config_from_inputs(2, 3e-4, 8, 2, 256, 0, 0)
    assert (cfg.epochs, cfg.lora_r, cfg.lora_alpha, cfg.early_stopping_patience, cfg.threads) == (2, 8, 16, 0, None)
    with pytest.raises(ValidationError):
        config_from_inputs(0, 3e-4, 8, 2, 256, 0, 0)
