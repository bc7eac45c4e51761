"""An honest estimate before training: a short measured probe, not a guess.

`python -m tuning.estimate PROBE_DIR` (what `probe()` starts, so the memory it reports is a
training process's own, not the app's) loads the base model the way the worker does, builds the
same trainer (SFT or DPO) on the same rows, times a few optimizer steps and one evaluation, and
writes what it measured to PROBE_DIR/estimate.json. `estimate()` turns that into the expected
duration and peak memory of the real run:

    duration = load + step time x planned steps + evaluation time x evaluations
    memory   = the probe's peak resident memory (the same model, batch and sequence lengths)

The step time is the mean of the probe's steps after the first (which pays for one-off set-up).
Batches vary in length, so three steps are a sample, not the average: README "An honest
estimate" reports how close it came on the demo. Checkpoint saving is not in the estimate.

A job started with an estimate keeps it in its folder (estimate.json); the worker compares it
with the real duration and the adapter card shows both (`estimated_s`, `estimate_error`).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from assistant.errors import ValidationError

from .config import TrainConfig, resolve_hardware

PROBE_STEPS = 4  # the first is set-up; the mean of the other three is the step time
LONG_RUN_S = 3600  # warn above an hour
ESTIMATE_FILE = "estimate.json"


@dataclass
class Estimate:
    method: str
    train_rows: int
    validation_rows: int
    total_steps: int
    evaluations: int
    load_s: float
    step_s: float
    eval_s: float
    duration_s: float
    peak_memory_mb: float
    available_memory_mb: float | None
    probe_steps: int
    probe_wall_s: float

    @property
    def warnings(self) -> list[str]:
        out = []
        if self.duration_s > LONG_RUN_S:
            out.append(
                f"this run would take about {self.duration_s / 3600:.1f} h: fewer epochs, a shorter max length or "
                "fewer examples make it shorter"
            )
        if self.available_memory_mb is not None and self.peak_memory_mb > self.available_memory_mb:
            out.append(
                f"it needs about {self.peak_memory_mb:.0f} MB but {self.available_memory_mb:.0f} MB are free: lower "
                "batch_size or max_length"
            )
        return out

    def summary(self) -> str:
        text = (
            f"Estimate ({self.method}, measured over {self.probe_steps} probe steps): about "
            f"{_duration(self.duration_s)} for {self.total_steps} steps ({self.step_s:.1f} s each"
            + (f", {self.evaluations} evaluations of {self.eval_s:.1f} s" if self.evaluations else "")
            + f", {self.load_s:.0f} s to load), peak memory about {self.peak_memory_mb:.0f} MB."
        )
        return text + "".join(f"\nWARNING: {w}" for w in self.warnings)

    def as_dict(self) -> dict:
        return {**asdict(self), "warnings": self.warnings}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _available_mb() -> float | None:
    try:
        import psutil

        return psutil.virtual_memory().available / 1e6
    except Exception:  # noqa: BLE001 - an estimate without the memory check is still useful
        return None


def run_probe(probe_dir: Path) -> dict:
    """In this process: build the run's trainer, time PROBE_STEPS steps and one evaluation."""
    from transformers import TrainerCallback

    spec = json.loads((probe_dir / "probe.json").read_text(encoding="utf-8"))
    config = TrainConfig.from_dict(spec["config"])
    hw = resolve_hardware(config, default_thread_count=spec.get("threads"))
    import torch

    torch.set_num_threads(hw.threads)
    steps: list[float] = []

    class Timer(TrainerCallback):
        began = 0.0

        def on_step_begin(self, args, state, control, **kw):
            self.began = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            steps.append(time.perf_counter() - self.began)

    started = time.perf_counter()
    probe_config = config.with_(max_steps=PROBE_STEPS, early_stopping_patience=0, save_total_limit=1)
    probe_config.eval_steps = None
    from .trainers import build_for

    trainer, _ = build_for(
        probe_config,
        hw,
        Path(spec["base_model_path"]),
        Path(spec["version_dir"]),
        probe_dir / "out",
        [Timer()],
        extra_train=[Path(p) for p in spec.get("extra_train", [])],
        start_adapter_dir=Path(spec["start_adapter_dir"]) if spec.get("start_adapter_dir") else None,
    )
    trainer.args.eval_strategy = "no"
    trainer.args.save_strategy = "no"
    trainer.args.load_best_model_at_end = False
    load_s = time.perf_counter() - started
    trainer.train()
    eval_s = 0.0
    if trainer.eval_dataset is not None:
        t = time.perf_counter()
        trainer.evaluate()
        eval_s = time.perf_counter() - t
    result = {
        "load_s": load_s,
        "steps": steps,
        "eval_s": eval_s,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "wall_s": time.perf_counter() - started,
    }
    (probe_dir / ESTIMATE_FILE).write_text(json.dumps(result), encoding="utf-8")
    return result


def estimate(
    config: TrainConfig,
    *,
    base_model_path: Path,
    version_dir: Path,
    extra_train: list[Path] | None = None,
    start_adapter_dir: Path | None = None,
    threads: int | None = None,
    timeout: float = 1800,
) -> Estimate:
    """Measure a probe of this run in a separate process and extrapolate to the whole run."""
    from .preference import pair_rows
    from .trainer import plan, read_split, training_rows

    config = config.validate()
    if config.method == "dpo":
        train, val = pair_rows(version_dir, "train"), pair_rows(version_dir, "validation")
    else:
        train, val = training_rows(version_dir, extra_train or []), read_split(version_dir, "validation")
    the_plan = plan(config, len(train), len(val))
    evaluations = the_plan.total_steps // the_plan.eval_steps if the_plan.eval_steps else 0
    probe_dir = Path(tempfile.mkdtemp(prefix="tailor-estimate-"))
    try:
        spec = {
            "config": config.to_dict(),
            "base_model_path": str(base_model_path),
            "version_dir": str(version_dir),
            "extra_train": [str(p) for p in extra_train or []],
            "start_adapter_dir": str(start_adapter_dir) if start_adapter_dir else None,
            "threads": threads,
        }
        (probe_dir / "probe.json").write_text(json.dumps(spec), encoding="utf-8")
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        r = subprocess.run(
            [sys.executable, "-m", "tuning.estimate", str(probe_dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        if r.returncode != 0 or not (probe_dir / ESTIMATE_FILE).is_file():
            tail = (r.stderr or "").strip().splitlines()[-1:] or ["no output"]
            raise ValidationError(f"the estimate's probe run failed: {tail[0][:300]}")
        measured = json.loads((probe_dir / ESTIMATE_FILE).read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    return extrapolate(measured, config.method, len(train), len(val), the_plan.total_steps, evaluations)


def extrapolate(measured: dict, method: str, train_rows: int, validation_rows: int, total_steps: int, evaluations: int):
    """The whole run from a probe's measurements (load_s, steps, eval_s, peak_memory_mb, wall_s)."""
    steps = measured["steps"][1:] or measured["steps"]
    step_s = sum(steps) / len(steps)
    duration = measured["load_s"] + step_s * total_steps + measured["eval_s"] * evaluations
    return Estimate(
        method=method,
        train_rows=train_rows,
        validation_rows=validation_rows,
        total_steps=total_steps,
        evaluations=evaluations,
        load_s=round(measured["load_s"], 2),
        step_s=round(step_s, 3),
        eval_s=round(measured["eval_s"], 2),
        duration_s=round(duration, 1),
        peak_memory_mb=round(measured["peak_memory_mb"], 0),
        available_memory_mb=_available_mb(),
        probe_steps=len(measured["steps"]),
        probe_wall_s=round(measured["wall_s"], 1),
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tuning.estimate PROBE_DIR", file=sys.stderr)
        return 2
    run_probe(Path(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
