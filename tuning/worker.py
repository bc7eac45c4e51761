"""The training process: `python -m tuning.worker JOB_DIR` (or under `accelerate launch`).

It reads its job from the database, trains with TRL SFTTrainer + LoRA (or DPOTrainer on the
preference pairs, tuning/preference.py, for `method` dpo), writes progress as
JSON lines to JOB_DIR/progress.jsonl (the format: tuning/progress.py) and to the job's row,
and on success publishes the best-validation adapter atomically into the registry. SIGTERM asks it to stop after the
current step (saving a checkpoint, so the job can be resumed); anything that goes wrong is
recorded on the job as `failed` with the error, and nothing already published is touched.

Under `accelerate launch` (several processes: tuning/launch.py) every rank trains, and the side
effects happen exactly once, on rank 0: the progress file, the job's row, the pid a cancel
signals, the published adapter and the next queued job. The ranks agree on stopping (a cancel
seen by any rank stops all of them after the same step, so none waits forever for the others
and the checkpoint saved is whole), and each rank dies with its launcher, so killing the job's
process group (a cancel's last resort) leaves no rank behind.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from assistant.db import utcnow
from assistant.workspace import Workspace

from . import ranks
from .config import SHARDED, TrainConfig, resolve_hardware
from .estimate import ESTIMATE_FILE
from .full_model import CHECKPOINT_KIND, check_memory, save_checkpoint
from .grounding_files import GROUNDING_FILE, card_summary, read_grounding_summary
from .job_store import JobStore
from .jobs import JobManager
from .launch import join_command
from .preference import reward_metrics
from .progress import PROGRESS_FILE, ProgressWriter
from .ranks import agree, is_main_process
from .registry import AdapterRegistry
from .trainer import last_checkpoint
from .trainers import build_for

_stop = threading.Event()


def _on_sigterm(signum, frame):
    _stop.set()


def make_callbacks(store: JobStore, job_id: int, writer: ProgressWriter):
    """TrainerCallbacks for progress (file + DB) and for a graceful stop."""
    from transformers import TrainerCallback

    class ReportProgress(TrainerCallback):
        def __init__(self):
            self.started = None
            self.steps_done = 0
            self.first_tokens = None
            self.compute_s = 0.0
            self.first_compute_s = 0.0
            self.step_began = None
            self.tokens_per_s = None

        def on_train_begin(self, args, state, control, **kw):
            self.started = time.perf_counter()
            self.start_step = state.global_step
            if state.is_world_process_zero:
                writer.write("begin", step=state.global_step, total=state.max_steps)
                store.update(
                    job_id,
                    status="running",
                    total_steps=state.max_steps,
                    step=state.global_step,
                    message=f"training: step {state.global_step}/{state.max_steps}",
                )

        def on_step_begin(self, args, state, control, **kw):
            self.step_began = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if self.step_began is not None:
                self.compute_s += time.perf_counter() - self.step_began
            self.steps_done += 1
            if not state.is_world_process_zero:
                return
            assert self.started is not None  # set in on_train_begin
            elapsed = time.perf_counter() - self.started
            per_step = elapsed / max(1, self.steps_done)
            eta = per_step * max(0, state.max_steps - state.global_step)
            writer.write("step", step=state.global_step, total=state.max_steps, epoch=state.epoch, eta_s=eta)
            store.update(
                job_id,
                step=state.global_step,
                total_steps=state.max_steps,
                epoch=state.epoch,
                eta_s=eta,
                message=f"training: step {state.global_step}/{state.max_steps}",
            )

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero or not logs:
                return
            if "loss" in logs:
                tokens = logs.get("num_tokens")
                if tokens is not None:
                    # tokens/s over the optimizer steps only (evaluation and saving excluded)
                    if self.first_tokens is None:
                        self.first_tokens, self.first_compute_s = tokens, self.compute_s
                        rate = tokens / self.compute_s if self.compute_s else None
                    else:
                        dt = self.compute_s - self.first_compute_s
                        rate = (tokens - self.first_tokens) / dt if dt > 0 else None
                    if rate:
                        self.tokens_per_s = rate
                writer.write(
                    "train",
                    step=state.global_step,
                    epoch=logs.get("epoch", state.epoch),
                    loss=logs["loss"],
                    learning_rate=logs.get("learning_rate"),
                    tokens=tokens,
                    tokens_per_s=self.tokens_per_s,
                    grad_norm=logs.get("grad_norm"),
                    token_accuracy=logs.get("mean_token_accuracy"),
                )
                store.update(job_id, loss=float(logs["loss"]), tokens_per_s=self.tokens_per_s)
            if "eval_loss" in logs:
                best = state.best_metric
                best_step = getattr(state, "best_global_step", None)
                best_value = min(best, logs["eval_loss"]) if best is not None else logs["eval_loss"]
                rewards = {
                    "reward_accuracy": logs.get("eval_rewards/accuracies"),
                    "reward_margin": logs.get("eval_rewards/margins"),
                }
                rewards = {k: v for k, v in rewards.items() if v is not None}  # DPO runs only
                writer.write("eval", step=state.global_step, eval_loss=logs["eval_loss"], **rewards)
                writer.log(
                    f"step {state.global_step}: validation loss {logs['eval_loss']:.4f}"
                    + (
                        f", reward accuracy {rewards['reward_accuracy']:.2f}, margin {rewards['reward_margin']:.3f}"
                        if len(rewards) == 2
                        else ""
                    )
                )
                store.update(
                    job_id,
                    eval_loss=float(logs["eval_loss"]),
                    best_eval_loss=float(best_value),
                    best_step=best_step if best is not None and best <= logs["eval_loss"] else state.global_step,
                )
            if "train_loss" in logs:
                writer.write("summary", **{k: v for k, v in logs.items() if isinstance(v, (int, float))})

        def on_save(self, args, state, control, **kw):
            if state.is_world_process_zero:
                writer.log(f"checkpoint saved at step {state.global_step}")

    class Stop(TrainerCallback):
        """SIGTERM (or a cancel recorded in the DB, read by rank 0 only) ends training after
        the current step, with a checkpoint saved so that the job can be resumed. With several
        processes the ranks agree at every step: a rank that stopped alone would leave the
        others waiting for it in the next gradient exchange."""

        def on_step_end(self, args, state, control, **kw):
            if not _stop.is_set() and state.is_world_process_zero:
                try:
                    if store.get(job_id).cancel_requested:
                        _stop.set()
                except Exception:  # noqa: BLE001 - the DB being busy must not stop training
                    pass
            if agree(_stop.is_set(), args.device):
                _stop.set()  # also on the ranks that only heard of it now
                control.should_training_stop = True
                control.should_save = True

    return [ReportProgress(), Stop()]


def grounding_inputs(job_dir: Path) -> tuple[dict | None, list[Path]]:
    """The grounding mix a job was queued with (tuning/grounding_mix.py): its summary
    (grounding.json, None when the job has none) and the files of its examples to add to the
    training rows (grounding.jsonl). A summary that counts examples whose file is gone is an
    error: the job must not train silently without them."""
    job_dir = Path(job_dir)
    summary = read_grounding_summary(job_dir)
    path = job_dir / GROUNDING_FILE
    if summary and summary.get("examples") and not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the job was queued with grounding examples")
    return summary, [path] if path.is_file() else []


def run(job_dir: Path) -> int:
    job_dir = Path(job_dir).resolve()
    spec = json.loads((job_dir / "job.json").read_text())
    # The job folder must be the one its workspace's row names: a folder copied from another
    # workspace (a restored backup) must never train on, or write to, the original's database.
    root = Path(spec["workspace"]).expanduser().resolve()
    if root not in job_dir.parents:
        print(
            f"tuning.worker: {job_dir} is not inside the workspace its job.json names ({root}); "
            "start jobs with `tailor jobs resume`",
            file=sys.stderr,
        )
        return 2
    workspace = Workspace(root)
    store = JobStore(workspace)
    job = store.get(spec["job_id"])
    if job.job_dir.resolve() != job_dir:
        print(f"tuning.worker: job {job.id} of {root} runs in {job.job_dir}, not {job_dir}", file=sys.stderr)
        return 2
    main = is_main_process()
    if ranks.launched():
        ranks.die_with_launcher()
    writer = ProgressWriter(job_dir / PROGRESS_FILE, enabled=main)
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.perf_counter()
    try:
        import torch

        config = TrainConfig.from_dict(job.config)
        threads = ranks.rank_threads(job.threads) if job.threads else None
        if threads:
            torch.set_num_threads(threads)
        hw = resolve_hardware(config, default_thread_count=threads)
        output_dir = job_dir / "checkpoints"
        resume_from = last_checkpoint(output_dir)
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(job_dir / "tensorboard")
        if main:
            store.update(
                job.id,
                status="running",
                pid=ranks.signalled_pid(job_dir),
                started_at=job.started_at or utcnow(),
                message="loading the base model",
            )
            if resume_from is not None:
                writer.write("resume", from_step=int(resume_from.name.split("-")[1]))
            writer.log(
                f"job {job.id}: {job.base_model} + dataset version {job.dataset_version} on {hw.device} "
                f"({hw.dtype}, {torch.get_num_threads()} threads"
                f"{', gradient checkpointing' if hw.gradient_checkpointing else ''})"
            )
        # Grounding examples made from the documents when the job was queued: this job's
        # training data only (tuning/grounding_mix.py).
        grounding, extra_train = grounding_inputs(job_dir)
        start_dir = AdapterRegistry(workspace).get(config.start_adapter).path if config.start_adapter else None
        if config.finetune == "full":
            need = check_memory(config, hw, Path(job.base_model_path))  # fails the job clearly, before loading
            if main:
                writer.log(f"full fine-tuning (every weight, no adapter): {need.describe()}")
        if main and config.method == "dpo":
            writer.log(
                "preference tuning (DPO) on the dataset's preference pairs, "
                + (f"continuing adapter {config.start_adapter}" if start_dir else "on a new adapter")
            )
        trainer, the_plan = build_for(
            config,
            hw,
            Path(job.base_model_path),
            Path(job.dataset_path),
            output_dir,
            make_callbacks(store, job.id, writer),
            extra_train=extra_train,
            start_adapter_dir=start_dir,
        )
        if main:
            store.update(job.id, total_steps=the_plan.total_steps)
            if grounding is not None:
                writer.log(f"grounding: {grounding.get('message', '')}")
            for rank in range(1, config.num_machines):  # a multi-node job waits for the others
                writer.log(f"machine {rank} joins with: {shlex.join(join_command(job_dir, config, rank))}")
            writer.log(
                f"{the_plan.train_examples} training / {the_plan.validation_examples} validation "
                f"{'preference pairs' if config.method == 'dpo' else 'examples'}; "
                f"{the_plan.total_steps} steps, evaluation every {the_plan.eval_steps or '-'} steps"
                + (f"; resuming from {resume_from.name}" if resume_from else "")
            )
        ranks.report_rank(trainer, config.strategy)
        if agree(_stop.is_set(), trainer.args.device):
            raise _Cancelled()
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        state = trainer.state
        if agree(_stop.is_set(), trainer.args.device):  # every rank takes the same way out
            raise _Cancelled()
        # Sharded weights (FSDP, ZeRO) are gathered by every rank together into one folder,
        # which rank 0 then publishes; otherwise rank 0 holds the whole model and saves it alone.
        gathered = ranks.gather_sharded(trainer, config.finetune, job_dir) if config.strategy in SHARDED else None
        if not main:
            return 0
        duration = time.perf_counter() - started
        tokens_per_s = store.get(job.id).tokens_per_s
        best_step = getattr(state, "best_global_step", None)
        if best_step is None and state.best_model_checkpoint:
            best_step = int(Path(state.best_model_checkpoint).name.split("-")[1])
        train_losses = [h["loss"] for h in state.log_history if "loss" in h]
        metrics = {
            "train_loss": train_losses[-1] if train_losses else None,
            "train_loss_mean": result.training_loss,
            "validation_loss": state.best_metric,
            "best_step": best_step,
            "steps": state.global_step,
            "planned_steps": the_plan.total_steps,
            "stopped_early": state.global_step < the_plan.total_steps,
            "duration_s": round(duration, 1),
            # CPU seconds this process used: with one thread, what the wall time would be on an
            # idle machine (the app's job budget); compare with duration_s to see contention
            "cpu_s": round(_cpu_seconds(), 1),
            "tokens_per_s": tokens_per_s,
            "train_examples": the_plan.train_examples,
            "grounding_examples": int((grounding or {}).get("examples") or 0),
            "validation_examples": the_plan.validation_examples,
            "device": hw.device,
            "dtype": hw.dtype,
            "threads": threads or hw.threads,  # per process
            "processes": int(os.environ.get("WORLD_SIZE", "1")),  # with `distributed`: how the run was split
            "distributed": config.strategy,
            "method": config.method,
            "finetune": config.finetune,
            **({"start_adapter": config.start_adapter} if config.start_adapter else {}),
            **reward_metrics(state.log_history, best_step),
            **estimate_check(job_dir, duration),
        }
        registry = AdapterRegistry(workspace)
        name, version = registry.next_name(job.family)
        writer.log(
            f"publishing adapter {name} (best validation loss {_fmt(state.best_metric)} at step {best_step})"
            if best_step
            else f"publishing adapter {name}"
        )
        trainer.model.eval()

        def write_adapter(tmp: Path) -> None:
            if gathered is not None:
                shutil.copytree(gathered, tmp, dirs_exist_ok=True)
                if config.finetune == "lora":
                    _write_lora_gguf(tmp, Path(job.base_model_path), writer)
                return
            if config.finetune == "full":  # the whole trained model (tuning/full_model.py)
                save_checkpoint(trainer.model, trainer.processing_class, tmp)
                return
            # only the trained adapter: a DPO run that continued an adapter also holds its
            # frozen reference copy ("ref"), which is not part of the result
            trainer.model.save_pretrained(tmp, selected_adapters=["default"])
            _write_lora_gguf(tmp, Path(job.base_model_path), writer)

        registry.publish(
            name,
            write_adapter,
            family=job.family,
            version=version,
            base_model=job.base_model,
            dataset_version=job.dataset_version,
            dataset_hash=job.dataset_hash,
            job_id=job.id,
            config=config.to_dict(),
            metrics=metrics,
            grounding=card_summary(grounding),
            kind=CHECKPOINT_KIND if config.finetune == "full" else None,
        )
        if gathered is not None:
            shutil.rmtree(gathered, ignore_errors=True)  # published: the copy in the job folder is not needed
        if config.finetune == "full":
            # A full run's checkpoints hold the model and its optimizer state (~12 bytes per
            # parameter each: 1.6 GB for the default model); once published they are not needed.
            shutil.rmtree(output_dir, ignore_errors=True)
            writer.log("removed the run's checkpoints (the published model is complete)")
        if job.activate:
            registry.activate(name)
        store.finish(
            job.id,
            "succeeded",
            adapter_name=name,
            best_step=best_step,
            best_eval_loss=state.best_metric,
            message=f"published {name}" + (" (now active in the chat)" if job.activate else ""),
        )
        writer.write("done", adapter=name, metrics=metrics)
        writer.log(
            f"done in {duration:.0f} s ({metrics['cpu_s']:.0f} CPU s): adapter {name}"
            + (" is active" if job.activate else "")
        )
        return 0
    except _Cancelled:
        if main:
            ckpt = last_checkpoint(job_dir / "checkpoints")
            store.finish(job.id, "cancelled", message="cancelled" + (f"; can resume from {ckpt.name}" if ckpt else ""))
            writer.log("cancelled" + (f"; last checkpoint {ckpt.name}" if ckpt else ""))
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure is recorded on the job
        traceback.print_exc()
        if main:
            error = f"{exc.__class__.__name__}: {exc}"
            if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
                error += " — lower batch_size or max_length, or turn on gradient checkpointing"
            store.finish(job.id, "failed", error=error, message="failed")
            writer.log(f"failed: {error}")
        return 1
    finally:
        if main:
            try:  # keep the queue moving when no app is running
                JobManager(workspace).pump()
            except Exception:  # noqa: BLE001
                traceback.print_exc()


class _Cancelled(Exception):
    pass


def estimate_check(job_dir: Path, duration_s: float) -> dict:
    """The estimate the job was started with against the real duration ({} without one):
    `estimate_error` is (estimated - real) / real, so +0.2 means it said 20% too long."""
    path = Path(job_dir) / ESTIMATE_FILE
    try:
        estimated = float(json.loads(path.read_text(encoding="utf-8"))["duration_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {"estimated_s": round(estimated, 1), "estimate_error": round((estimated - duration_s) / duration_s, 3)}


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _fmt(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m tuning.worker JOB_DIR", file=sys.stderr)
        return 2
    return run(Path(argv[0]))


def _write_lora_gguf(adapter_dir: Path, base_folder: Path, writer) -> None:
    """The adapter in llama.cpp's GGUF LoRA format, published with it (`adapter.gguf`), so the
    llama.cpp engine can hot-swap it at once. Optional: where it cannot be written (llama.cpp's
    format lacks a feature, a disk error), the engine converts it when first used, and the torch
    engine never needs it; so a failure is logged, not fatal to the job."""
    from assistant.gguf_lora import convert_lora_to_gguf, lora_gguf_path

    try:
        convert_lora_to_gguf(adapter_dir, base_folder, lora_gguf_path(adapter_dir))
    except Exception as exc:  # noqa: BLE001 - the adapter itself is already written and valid
        writer.log(f"note: no llama.cpp copy of the adapter ({exc}); it will be converted when first used")


if __name__ == "__main__":
    sys.exit(main())
