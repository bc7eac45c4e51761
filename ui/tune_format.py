"""Gradio-free helpers that turn training jobs and adapters into what the Tune tab shows: the
job's summary, its loss curve's rows, the job and adapter lists, and the Advanced panel's
settings as a TrainConfig."""

from __future__ import annotations

import pandas as pd

from tuning.config import TrainConfig
from tuning.grounding_mix import DEFAULT_RATIO, GroundingOptions
from tuning.job_store import Job
from tuning.progress import TrainingProgress as Progress

STATUS_ICONS = {
    "queued": "⏳",
    "starting": "⏳",
    "running": "🏃",
    "succeeded": "✅",
    "failed": "❌",
    "cancelled": "⏹",
    "interrupted": "⚠️",
}


def _secs(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


NO_JOB = (
    "**No training job yet.** Press **Train on current dataset** above: this tab then shows the job's "
    "progress, its loss chart and its log, and lists the adapter it publishes under *Published adapters*. "
    "It learns from the Dataset tab's examples: save replies from the chat, import a file there, or load "
    "the demo at the top of the page first."
)


def job_summary(job: Job | None) -> str:
    if job is None:
        return NO_JOB
    lines = [
        f"### {STATUS_ICONS.get(job.status, '')} Job {job.id}: {job.status}"
        + (f" → `{job.adapter_name}`" if job.adapter_name else "")
    ]
    if job.message:
        lines.append(job.message)
    facts = []
    if job.total_steps:
        pct = 100 * job.step / job.total_steps
        facts.append(f"step **{job.step}/{job.total_steps}** ({pct:.0f}%)")
    if job.epoch is not None:
        facts.append(f"epoch {job.epoch:.2f}")
    if job.tokens_per_s:
        facts.append(f"{job.tokens_per_s:.0f} tokens/s")
    if job.status == "running":
        facts.append(f"ETA {_secs(job.eta_s)}")
    if job.loss is not None:
        facts.append(f"train loss {job.loss:.3f}")
    if job.eval_loss is not None:
        facts.append(f"validation loss {job.eval_loss:.3f}")
    if job.best_step is not None and job.best_eval_loss is not None:
        facts.append(f"best validation {job.best_eval_loss:.3f} at step **{job.best_step}**")
    if facts:
        lines.append(" · ".join(facts))
    if job.is_active and job.loss is None:  # the chart is hidden until there is a curve to draw
        lines.append("The loss chart appears here once the first training steps are logged.")
    config = job.config or {}
    method = (
        f"DPO on the preference pairs, from {config.get('start_adapter') or 'the base'} · "
        if config.get("method") == "dpo"
        else "full fine-tuning (every weight; publishes a whole checkpoint) · "
        if config.get("finetune") == "full"
        else ""
    )
    lines.append(
        f"{method}dataset version {job.dataset_version} · base {job.base_model} · "
        f"{job.threads or '-'} threads" + (f" · resumed {job.resumes}×" if job.resumes else "")
    )
    grounding = job.grounding()
    if grounding and grounding.get("message"):
        lines.append(f"📚 {grounding['message']}")
    if job.error:
        lines.append(f"**Error:** {job.error}")
    if job.status == "succeeded" and job.best_step is not None:
        lines.append(f"The published adapter is the checkpoint with the lowest validation loss (step {job.best_step}).")
    return "\n\n".join(lines)


def loss_frame(progress: Progress | None) -> pd.DataFrame:
    rows = []
    if progress is not None:
        rows += [{"step": p["step"], "loss": float(p["loss"]), "series": "train"} for p in progress.train]
        rows += [{"step": p["step"], "loss": float(p["eval_loss"]), "series": "validation"} for p in progress.eval]
    return pd.DataFrame(rows, columns=["step", "loss", "series"])


def job_choices(jobs: list[Job]) -> list[tuple[str, str]]:
    return [
        (
            f"#{j.id} {j.status} · {j.created_at[:16].replace('T', ' ')}"
            + (f" · {j.adapter_name}" if j.adapter_name else ""),
            str(j.id),
        )
        for j in jobs
    ]


ADAPTER_COLUMNS = [
    "active",
    "name",
    "learned",
    "dataset version",
    "val loss",
    "train loss",
    "best step",
    "tokens/s",
    "duration",
    "size MB",
    "created",
]


def _learned(metrics: dict) -> str:
    """What an adapter learned: SFT, or DPO (from which adapter, with its validation reward accuracy)."""
    if metrics.get("method") != "dpo":
        return "SFT, full model" if metrics.get("finetune") == "full" else "SFT"
    acc = metrics.get("reward_accuracy")
    return f"DPO from {metrics.get('start_adapter') or 'base'}" + (
        f", reward acc. {acc:.2f}" if isinstance(acc, (int, float)) else ""
    )


def adapter_rows(records) -> pd.DataFrame:
    rows = []
    for r in records:
        m = r.metrics or {}

        def num(key, fmt="{:.3f}", m=m):
            v = m.get(key)
            return fmt.format(v) if isinstance(v, (int, float)) else "-"

        rows.append(
            [
                "●" if r.active else "",
                r.name,
                _learned(m),
                r.dataset_version or "-",
                num("validation_loss"),
                num("train_loss"),
                m.get("best_step", "-"),
                num("tokens_per_s", "{:.0f}"),
                _secs(m.get("duration_s")),
                f"{r.size_bytes / 1e6:.1f}",
                r.created_at[:16].replace("T", " "),
            ]
        )
    return pd.DataFrame(rows, columns=ADAPTER_COLUMNS)


def config_from_inputs(epochs, lr, rank, batch, max_length, patience, threads) -> TrainConfig:
    default = TrainConfig()
    rank = int(rank)
    return TrainConfig.from_dict(
        {
            **default.to_dict(),
            "epochs": float(epochs),
            "learning_rate": float(lr),
            "lora_r": rank,
            "lora_alpha": 2 * rank,
            "batch_size": int(batch),
            "max_length": int(max_length),
            "early_stopping_patience": int(patience),
            "threads": int(threads) if threads else None,
        }
    )


def grounding_from_inputs(enabled, ratio) -> GroundingOptions:
    """The "Keep reading my documents" toggle and its share of the training set."""
    return GroundingOptions(enabled=bool(enabled), ratio=float(DEFAULT_RATIO if ratio is None else ratio)).validate()
