"""Full fine-tuning on the tiny random model: every weight trains and the base folder is left as
it was; a job publishes a whole safetensors checkpoint into the registry, which the chat loads as
a second model under its name and which exports like an adapter; a run that does not fit in
memory is refused before anything is queued or loaded, with the numbers."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from assistant.adapters import FULL, AdapterCatalog
from assistant.chat import ChatRequest, ChatService
from assistant.conversations import ConversationLog
from assistant.engine import GenerationOptions
from assistant.errors import ModelError, ValidationError
from assistant.hardware import pick_hardware
from assistant.models import count_parameters
from assistant.runtime import second_models_for
from tuning.config import TrainConfig, full_defaults, resolve_hardware
from tuning.full_model import check_memory, memory_need
from tuning.trainer import build_trainer

GREEDY = GenerationOptions(temperature=0, max_new_tokens=12)


def _config(**kw):
    base = dict(
        finetune="full",
        max_steps=3,
        batch_size=4,
        max_length=64,
        threads=1,
        device="cpu",
        learning_rate=1e-2,
        warmup_ratio=0.0,
        eval_steps=1,
        early_stopping_patience=0,
    )
    return TrainConfig(**{**base, **kw}).validate()


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.safetensors"))}


def test_full_fine_tuning_trains_every_weight_of_a_copy(tiny_model_dir, tmp_path, tune_version_dir):
    before = _digest(tiny_model_dir)
    config = _config()
    trainer, _ = build_trainer(config, resolve_hardware(config), tiny_model_dir, tune_version_dir, tmp_path / "out")
    assert not hasattr(trainer.model, "peft_config")  # no adapter: the model itself trains
    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    assert all(p.requires_grad for p in trainer.model.parameters())
    trainer.train()
    params = dict(trainer.model.named_parameters())
    unchanged = [n for n, p in start.items() if torch.equal(p, params[n].detach())]
    assert not unchanged, unchanged[:5]
    assert _digest(tiny_model_dir) == before  # the base folder on disk is untouched


def test_full_config_rules():
    assert full_defaults().finetune == "full" and full_defaults().learning_rate == 5e-5
    with pytest.raises(ValidationError, match="finetune must be one of"):
        TrainConfig(finetune="half").validate()
    with pytest.raises(ValidationError, match="preference tuning trains LoRA"):
        TrainConfig(finetune="full", method="dpo").validate()


def test_memory_need_counts_weights_gradients_and_adam(tiny_model_dir):
    params = count_parameters(tiny_model_dir)
    model = __import__("transformers").AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert params == sum(p.numel() for p in model.parameters())  # tied embeddings counted once
    config = _config()
    need = memory_need(config, resolve_hardware(config), tiny_model_dir)
    assert need.parameters == params and need.weights_bytes == params * 16  # fp32: 4 x 4 bytes


def test_a_run_that_does_not_fit_is_refused_before_it_is_queued(
    tiny_model_dir, tune_version_dir, tune_manager, monkeypatch, workspace
):
    from tuning.service import TuneService

    monkeypatch.setattr("tuning.full_model.available_memory", lambda device="cpu": 1_000_000)  # 1 MB free
    config = _config()
    with pytest.raises(ValidationError, match=r"Not enough memory: full fine-tuning of .* needs about .* 0\.0 GB free"):
        check_memory(config, resolve_hardware(config), tiny_model_dir)
    service = TuneService(workspace, "tiny", tiny_model_dir, tune_manager, tune_manager.registry)
    with pytest.raises(ValidationError, match="Train a LoRA adapter instead"):
        service.start(config=config)
    assert tune_manager.store.list() == []  # nothing queued


def test_a_full_job_publishes_a_checkpoint_the_chat_loads_as_a_second_model(
    tiny_model_dir, tiny_engine, tmp_path, tune_helpers, tune_manager, workspace
):
    version = tune_helpers.write_version(tmp_path / "v", n_train=8, n_validation=4)
    job = tune_helpers.submit(
        tune_manager, tiny_model_dir, version, finetune="full", max_steps=3, max_length=64, learning_rate=1e-2
    )
    done = tune_manager.wait(job.id, timeout=600)
    assert done.status == "succeeded", done.error
    card = tune_manager.registry.get(done.adapter_name)
    assert card.kind == FULL and card.config["finetune"] == "full" and card.metrics["finetune"] == "full"
    assert (card.path / "config.json").is_file() and list(card.path.glob("*.safetensors"))
    assert not (card.path / "adapter_config.json").exists()
    assert json.loads((card.path / "tailor.json").read_text())["kind"] == FULL
    assert not (done.job_dir / "checkpoints").exists()  # 12 bytes a parameter each: removed once published
    assert _digest(card.path) != _digest(tiny_model_dir)  # it trained

    catalog = AdapterCatalog(workspace.adapters_dir)
    (info,) = catalog.list()
    assert info.kind == FULL and info.name == card.name
    chat = ChatService(
        tiny_engine, ConversationLog(workspace.db), catalog, second_models=second_models_for(pick_hardware("cpu"), 512)
    )
    assert card.name in chat.models()
    route = chat.route(card.name)
    assert route.engine is not tiny_engine and route.adapter is None and route.label == card.name
    assert card.name not in tiny_engine.adapters  # never loaded onto the base as a LoRA
    _, reply = chat.chat(ChatRequest("Hello there", model=card.name, options=GREEDY))
    assert reply.adapter == card.name and reply.content.strip()
    # the reply is the checkpoint's own greedy output, not the base model's
    messages = [{"role": "user", "content": "Hello there"}]
    assert reply.content == route.engine.generate(messages, GREEDY).text
    assert chat.route(card.name).engine is route.engine  # loaded once
    _, base_reply = chat.chat(ChatRequest("Hello there", model="base", options=GREEDY))
    assert base_reply.content == tiny_engine.generate(messages, GREEDY).text


def _chat_with_a_full_copy(tiny_model_dir, tiny_engine, workspace, name: str) -> ChatService:
    """A chat whose registry holds a full checkpoint `name` (a copy of the tiny base model)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = workspace.adapters_dir / name
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    catalog = AdapterCatalog(workspace.adapters_dir)
    return ChatService(
        tiny_engine, ConversationLog(workspace.db), catalog, second_models=second_models_for(pick_hardware("cpu"), 512)
    )


def test_a_checkpoint_too_big_for_memory_is_not_loaded(tiny_model_dir, tiny_engine, workspace, monkeypatch):
    chat = _chat_with_a_full_copy(tiny_model_dir, tiny_engine, workspace, "big-v1")
    monkeypatch.setattr("assistant.second_model.available_memory", lambda device="cpu": 1000)
    with pytest.raises(ModelError, match="Not enough memory to load the full checkpoint 'big-v1'"):
        chat.send(ChatRequest("Hi", model="big-v1"))
    assert chat.log.list() == []  # nothing was written
    assert chat.second_models.loaded is None


def test_a_full_checkpoint_exports_as_folder_and_as_merged_model(tiny_model_dir, workspace, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuning.export import export_adapter, export_merged

    folder = workspace.adapters_dir / "whole-v1"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    catalog = AdapterCatalog(workspace.adapters_dir)
    zipped = export_adapter(catalog, "whole-v1", tmp_path / "whole.zip", "zip")
    assert zipped.kind == "adapter-zip" and zipped.bytes > 0
    merged = export_merged(tiny_model_dir, catalog, "whole-v1", tmp_path / "merged")
    assert merged.kind == "merged" and _digest(tmp_path / "merged") == _digest(folder)
    meta = json.loads((tmp_path / "merged" / "tailor-export.json").read_text())
    assert meta["full_checkpoint"] is True
    AutoModelForCausalLM.from_pretrained(tmp_path / "merged")  # loads as a plain checkpoint


def test_a_full_checkpoint_exports_as_gguf_without_a_lora_file(tiny_model_dir, workspace, tmp_path):
    pytest.importorskip("llama_cpp")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from assistant.models import ResolvedModel
    from tuning.gguf_export import export_gguf

    folder = workspace.adapters_dir / "whole-v1"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    result = export_gguf(
        ResolvedModel("tiny", tiny_model_dir, "folder"),
        AdapterCatalog(workspace.adapters_dir),
        "whole-v1",
        tmp_path / "out",
        quants="f32",
    )
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert "whole-v1.f32.gguf" in names and "Modelfile" in names and "whole-v1.lora.gguf" not in names
    assert any("full fine-tuned checkpoint" in n for n in result.notes)


def test_a_request_refused_anyway_does_not_load_a_full_checkpoint(tiny_model_dir, tiny_engine, workspace):
    """Every check that can refuse a request runs before routing: routing to a full checkpoint
    loads a second model, which a bad request must not cost."""
    chat = _chat_with_a_full_copy(tiny_model_dir, tiny_engine, workspace, "full-v1")
    bad = [
        ChatRequest("Hi", model="full-v1", options=GenerationOptions(temperature=5)),
        ChatRequest("Hi", model="full-v1", options=GenerationOptions(max_new_tokens=10**6)),
        ChatRequest("Hi", model="full-v1", rag=True),  # no knowledge base
        ChatRequest("Hi", model="full-v1", history=[{"role": "wizard", "content": "x"}]),
        ChatRequest("Hi", model="full-v1", no_source="shrug"),
    ]
    for request in bad:
        with pytest.raises(ValidationError):
            chat.send(request)
    assert chat.second_models.loaded is None and chat.log.list() == []
    _, reply = chat.chat(ChatRequest("Hi", model="full-v1", options=GREEDY))  # a good one loads it
    assert chat.second_models.loaded is not None and reply.adapter == "full-v1"
