"""The adapter registry: atomic publish with lineage, rename/delete/activate kept in step with
the folders the chat reads, and the chat offering a new adapter without a restart."""

import json

import pytest

from assistant.adapters import AdapterCatalog
from assistant.errors import NotFoundError, ValidationError
from tuning.registry import AdapterRegistry


@pytest.fixture
def tune_lora_writer(tiny_model_dir, random_lora):
    """`write(folder)` of one random LoRA adapter, for AdapterRegistry.publish."""
    return random_lora(tiny_model_dir, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def test_publish_records_lineage_and_versions(workspace, tune_lora_writer):
    reg = AdapterRegistry(workspace)
    assert reg.next_name("shop") == ("shop-v1", 1)
    rec = reg.publish(
        "shop-v1",
        tune_lora_writer,
        base_model="tiny",
        dataset_version=3,
        dataset_hash="abc",
        job_id=7,
        config={"lora_r": 4},
        metrics={"validation_loss": 1.5, "best_step": 4},
    )
    assert (rec.family, rec.version, rec.dataset_version, rec.job_id) == ("shop", 1, "3", 7)
    assert rec.metrics["best_step"] == 4 and rec.size_bytes > 0 and rec.status == "ready"
    meta = json.loads((rec.path / "tailor.json").read_text())
    assert meta["dataset_hash"] == "abc" and meta["config"] == {"lora_r": 4}
    assert reg.next_name("shop") == ("shop-v2", 2)
    with pytest.raises(ValidationError, match="already exists"):
        reg.publish("shop-v1", tune_lora_writer)
    with pytest.raises(ValidationError):
        reg.publish("../evil", tune_lora_writer)


def test_failed_publish_leaves_nothing(workspace):
    reg = AdapterRegistry(workspace)

    def broken(tmp):
        (tmp / "adapter_config.json").write_text("{}")
        raise OSError("disk full")

    with pytest.raises(OSError):
        reg.publish("half-v1", broken)
    assert list(workspace.adapters_dir.iterdir()) == [] and reg.list() == []


def test_rename_delete_activate_follow_the_folders(workspace, tune_lora_writer):
    reg = AdapterRegistry(workspace)
    catalog = AdapterCatalog(workspace.adapters_dir)
    reg.publish("a-v1", tune_lora_writer)
    reg.publish("b-v1", tune_lora_writer)
    reg.activate("a-v1")
    assert catalog.active() == "a-v1" and [r.name for r in reg.list() if r.active] == ["a-v1"]

    reg.rename("a-v1", "friendly")
    assert catalog.active() == "friendly" and sorted(catalog.names()) == ["b-v1", "friendly"]
    assert json.loads((workspace.adapters_dir / "friendly" / "tailor.json").read_text())["name"] == "friendly"
    with pytest.raises(ValidationError, match="already exists"):
        reg.rename("friendly", "b-v1")
    with pytest.raises(ValidationError):
        reg.rename("friendly", "base")

    reg.delete("friendly")
    assert catalog.active() is None  # back to the base model
    assert catalog.names() == ["b-v1"]
    assert [r.status for r in reg.list(include_deleted=True) if r.name == "friendly"] == ["deleted"]
    with pytest.raises(NotFoundError):
        reg.activate("friendly")
    assert reg.activate("base") is None


def test_folders_placed_by_hand_are_registered(workspace, tune_lora_writer):
    folder = workspace.adapters_dir / "manual-v3"
    folder.mkdir(parents=True)
    tune_lora_writer(folder)
    (folder / "tailor.json").write_text(json.dumps({"base_model": "tiny", "metrics": {"validation_loss": 2.0}}))
    rec = AdapterRegistry(workspace).get("manual-v3")
    assert (rec.family, rec.version, rec.base_model) == ("manual", 3, "tiny")


def test_chat_offers_a_new_adapter_without_restart(workspace, tiny_engine, tune_lora_writer):
    from assistant.chat import ChatRequest, ChatService
    from assistant.conversations import ConversationLog
    from assistant.engine import GenerationOptions

    chat = ChatService(tiny_engine, ConversationLog(workspace.db), AdapterCatalog(workspace.adapters_dir))
    assert chat.models() == ["base"]
    base_model_before = tiny_engine.base_model
    reg = AdapterRegistry(workspace)
    reg.publish("fresh-v1", tune_lora_writer)
    reg.activate("fresh-v1")
    assert chat.models() == ["base", "fresh-v1"] and chat.default_model() == "fresh-v1"
    _, reply = chat.chat(
        ChatRequest(text="hi", model="fresh-v1", options=GenerationOptions(temperature=0, max_new_tokens=4))
    )
    assert reply.adapter == "fresh-v1"
    _, reply = chat.chat(
        ChatRequest(text="hi", model="base", options=GenerationOptions(temperature=0, max_new_tokens=4))
    )
    assert reply.adapter is None and tiny_engine.base_model is base_model_before  # no base reload
    tiny_engine.unload_adapter("fresh-v1")
