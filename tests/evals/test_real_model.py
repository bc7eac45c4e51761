"""The evaluation pipeline on the real default model (SmolLM2-135M-Instruct), kept short:
two demo fact questions, base with and without retrieval over the demo's "about" page."""

import math
from pathlib import Path

import pytest

from assistant.adapters import AdapterCatalog
from assistant.chat import ChatService
from assistant.conversations import ConversationLog
from evals import open_evals
from evals.reports import aggregate_run
from evals.runner import RunOptions
from evals.sets import load_facts

from .conftest import EmbeddingRetriever

DEMO = Path(__file__).resolve().parents[2] / "demo" / "lantern_bay"


@pytest.mark.real
def test_real_model_facts_with_and_without_retrieval(real_engine, workspace):
    paragraphs = [p.strip() for p in (DEMO / "docs" / "about.md").read_text().split("\n\n") if len(p.strip()) > 80]
    retriever = EmbeddingRetriever([("about.md", p) for p in paragraphs], threshold=0.2)
    chat = ChatService(real_engine, ConversationLog(workspace.db), AdapterCatalog(workspace.adapters_dir), retriever)
    evals = open_evals(workspace, chat)
    facts = load_facts(DEMO / "facts.jsonl")
    facts.items = [i for i in facts.items if i.id in ("f002", "f009")]  # founder, shop dog
    run = evals.runs.start(
        facts, evals.runs.resolve_arms("base", "off,on"), RunOptions(max_new_tokens=32), background=False
    )
    assert run.status == "done", run.error
    results = {(r.arm, r.item_id): r for r in evals.store.results(run.id)}
    assert len(results) == 4
    for r in results.values():
        assert r.reply.strip() and math.isfinite(r.metrics["ref_loss"]) and r.metrics["semantic"] is not None
    # the gold passage in the prompt makes the gold answer far more likely under the same model
    for item in ("f002", "f009"):
        assert results[("base+rag", item)].passages  # retrieved, not abstained
        assert results[("base+rag", item)].metrics["ref_loss"] < results[("base", item)].metrics["ref_loss"]
    summary = aggregate_run(evals.store, run.id)
    assert summary.metrics["base+rag"]["perplexity"].mean < summary.metrics["base"]["perplexity"].mean
    assert summary.metrics["base+rag"]["fact"].mean >= summary.metrics["base"]["fact"].mean
