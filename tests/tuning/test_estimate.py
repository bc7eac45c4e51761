"""The estimate before training: extrapolation from a probe (planted numbers), a real probe on
the tiny model, warnings, and a job started with an estimate comparing it with the real run."""

from __future__ import annotations

import pytest

from tuning.estimate import LONG_RUN_S, extrapolate


def test_extrapolation_from_planted_probe_numbers():
    measured = {"load_s": 10.0, "steps": [9.0, 2.0, 2.5, 1.5], "eval_s": 4.0, "peak_memory_mb": 900.0, "wall_s": 30}
    est = extrapolate(measured, "sft", 200, 20, total_steps=50, evaluations=5)
    # the first step pays for set-up and is left out: 2.0 s a step
    assert est.step_s == pytest.approx(2.0) and est.duration_s == pytest.approx(10 + 2.0 * 50 + 4 * 5)
    assert est.peak_memory_mb == 900 and "2 min" in est.summary() and not est.warnings
    long = extrapolate({**measured, "steps": [1, LONG_RUN_S / 10]}, "sft", 200, 20, total_steps=20, evaluations=0)
    assert any("would take about" in w for w in long.warnings)
    est.available_memory_mb = 500.0
    assert any("free" in w for w in est.warnings)


def test_a_real_probe_and_a_job_that_compares_its_estimate(workspace, tiny_model_dir, tune_version_dir):
    from tuning.config import TrainConfig
    from tuning.service import open_tuning

    service = open_tuning(workspace, "tiny", tiny_model_dir)
    # a planted workload: 24 train / 6 validation examples, 12 steps, 2 evaluations
    config = TrainConfig(max_steps=12, eval_steps=6, batch_size=2, max_length=96, threads=1, early_stopping_patience=0)
    from tuning.versions import DatasetVersion

    version = DatasetVersion(id=1, content_hash="t", created_at="", counts={"train": 24}, path=tune_version_dir)
    service.versions = lambda: type("V", (), {"get": lambda self, _id: version})()  # the planted version
    est = service.estimate(dataset_version=1, config=config)
    assert (est.total_steps, est.evaluations, est.train_rows, est.validation_rows) == (12, 2, 24, 6)
    assert est.step_s > 0 and est.load_s > 0 and est.eval_s > 0 and est.peak_memory_mb > 100
    job = service.start(dataset_version=1, config=config, estimate=est)
    done = service.jobs.wait(job.id, timeout=600)
    assert done.status == "succeeded", done.error
    metrics = service.registry.get(done.adapter_name).metrics
    assert metrics["estimated_s"] == est.duration_s
    real = metrics["duration_s"]
    assert metrics["estimate_error"] == pytest.approx((est.duration_s - real) / real, abs=5e-3)
    # a tiny run is mostly start-up, which the probe measures too: within a factor of two
    assert abs(metrics["estimate_error"]) < 1.0, metrics
