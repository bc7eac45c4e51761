"""Assemble the core services from settings: workspace, model, engine, log, chat.

Both the server and the CLI start here, so they resolve models and open the workspace the
same way."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .adapters import AdapterCatalog, AdapterInfo
from .backends import load_engine
from .chat import ChatService
from .conversations import ConversationLog
from .engine import ChatEngine
from .hardware import Hardware, pick_hardware, set_threads
from .models import ResolvedModel, resolve_model
from .second_model import SecondModels
from .settings import Settings
from .workspace import Workspace

log = logging.getLogger(__name__)


@dataclass
class Core:
    settings: Settings
    workspace: Workspace
    model: ResolvedModel
    engine: ChatEngine
    conversations: ConversationLog
    adapters: AdapterCatalog
    chat: ChatService


def open_core(settings: Settings, progress: Callable[[str], None] = log.info) -> Core:
    set_threads(settings.threads)
    workspace = Workspace(settings.home)
    resolved = resolve_model(
        settings.model, workspace.models_dir, allow_downloads=settings.allow_downloads, progress=progress
    )
    hardware = pick_hardware(settings.device, settings.dtype)
    adapters = AdapterCatalog(workspace.adapters_dir)
    engine: ChatEngine
    if settings.engine_url:  # generation on a remote server; the tokenizer and catalog stay here
        from .remote_engine import load_remote_engine

        engine = load_remote_engine(
            resolved,
            hardware,
            url=settings.engine_url,
            api_key=settings.engine_api_key,
            remote_adapter_dir=settings.engine_adapter_dir,
            catalog=adapters,
            max_context=settings.max_context,
            parallel=settings.parallel,
            progress=progress,
        )
    else:
        engine = load_engine(
            resolved,
            hardware,
            backend=settings.engine,
            max_context=settings.max_context,
            threads=settings.threads,
            parallel=settings.parallel,
            weights=settings.gguf_weights,
            models_dir=workspace.models_dir,
            progress=progress,
            flash_attention=settings.flash_attention,
            prefill_chunk=settings.prefill_chunk,
        )
    conversations = ConversationLog(workspace.db, settings.accounts())
    chat = ChatService(
        engine,
        conversations,
        adapters,
        no_source=settings.no_source,
        second_models=second_models_for(hardware, settings.max_context),
    )
    return Core(settings, workspace, resolved, engine, conversations, adapters, chat)


def second_models_for(hardware: Hardware, max_context: int) -> SecondModels:
    """Full fine-tuned checkpoints load as second models on the torch engine (why:
    assistant/second_model.py)."""

    def load(info: AdapterInfo) -> ChatEngine:
        from .torch_engine import TorchEngine

        return TorchEngine.load(ResolvedModel(info.name, info.path, "folder"), hardware, max_context=max_context)

    return SecondModels(load, hardware)
