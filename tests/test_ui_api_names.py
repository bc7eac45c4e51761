"""Every Gradio event has an explicit, unique api_name: others script against them."""

from assistant.adapters import AdapterCatalog
from assistant.chat import ChatService
from assistant.conversations import ConversationLog
from assistant.models import ResolvedModel
from assistant.runtime import Core
from assistant.settings import Settings


def test_every_event_has_a_unique_api_name(tiny_engine, workspace):
    from ui.app import build_ui

    log = ConversationLog(workspace.db)
    adapters = AdapterCatalog(workspace.adapters_dir)
    core = Core(
        Settings(home=workspace.root),
        workspace,
        ResolvedModel("tiny", workspace.root, "folder"),
        tiny_engine,
        log,
        adapters,
        ChatService(tiny_engine, log, adapters),
    )
    demo = build_ui(core)
    deps = demo.config["dependencies"]
    assert deps
    names = [d.get("api_name") for d in deps]
    unnamed = [d for d, n in zip(deps, names) if not n]
    assert not unnamed, f"{len(unnamed)} events without an api_name"
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates, f"duplicate api_names: {duplicates}"
