"""The chat service: what the UI, the CLI and the HTTP API call to hold a conversation.

It ties the engine (generation), the adapter catalog (which adapters exist), the optional
retriever and the conversation log (storage) together. A turn's generation and its storage
run in a worker thread that does not depend on anybody reading the stream, so a closed
browser tab or a stop request still leaves the (partial) reply saved."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from .adapters import BASE, FULL, AdapterCatalog
from .answer_choice import answer_focus
from .conversations import ConversationLog, StoredMessage
from .engine import ChatEngine, Generation, GenerationOptions
from .errors import NotFoundError, ValidationError
from .prompting import Retrieval, Retriever, build_messages, reading_options
from .second_model import SecondModels
from .served_adapters import ServedAdapters

log = logging.getLogger(__name__)

NO_SOURCE_REPLY = "I could not find a source for that in your documents, so I will not guess."

# What a retrieval chat does when no document supports an answer (the retriever abstained):
#   "answer":  the model answers without sources and the reply is marked as not coming from
#              the documents (the closest passages are still shown). The default: most of
#              what people ask a tuned assistant is conversation, not document lookup. On the
#              demo the retriever finds no good source for 82% of the held-out conversational
#              prompts, and declining all of them threw away the tone that tuning taught.
#   "decline": the reply is NO_SOURCE_REPLY and the model is not asked at all: for
#              assistants that must answer only from documents (the default model invents an
#              answer to ~90% of questions its context cannot answer, even when told not to).
NO_SOURCE_POLICIES = ("answer", "decline")
DEFAULT_NO_SOURCE = "answer"


class Turn:
    """One user message and the assistant's reply in progress. Iterating yields the reply so
    far (a growing string); `wait()` returns the stored assistant message."""

    def __init__(
        self,
        conversation_id: str,
        user_message: StoredMessage,
        generation: Generation | None,
        retrieval: Retrieval | None,
        no_source: str = DEFAULT_NO_SOURCE,
        replaces: StoredMessage | None = None,
    ):
        self.conversation_id = conversation_id
        self.replaces = replaces  # the reply this one regenerates (None: a new turn)
        self.user_message = user_message
        self.generation = generation
        self.retrieval = retrieval
        self.no_source = no_source
        self.reply: StoredMessage | None = None
        self.error: BaseException | None = None
        self._stored = threading.Event()

    @property
    def grounded(self) -> bool:
        """The reply was made from retrieved passages (they were in the prompt)."""
        return self.retrieval is not None and not self.retrieval.abstain

    @property
    def declined(self) -> bool:
        """No source was good enough and the policy was to decline: the reply is NO_SOURCE_REPLY."""
        return self.retrieval is not None and self.retrieval.abstain and self.generation is None

    def __iter__(self) -> Iterator[str]:
        if self.generation is not None:
            yield from self.generation
        self._stored.wait()
        if self.reply is not None:
            yield self.reply.content

    def stop(self) -> None:
        if self.generation is not None:
            self.generation.stop()

    def wait(self, timeout: float | None = None) -> StoredMessage:
        if not self._stored.wait(timeout):
            raise TimeoutError("the reply did not finish in time")
        if self.error is not None:
            raise self.error
        assert self.reply is not None  # set before _stored is, unless error is
        return self.reply


@dataclass(frozen=True)
class Route:
    """Where a request for a model goes: `engine.stream(..., adapter=adapter)`; `label` is the
    adapter or full checkpoint name the conversation records (None: the base model)."""

    engine: ChatEngine
    adapter: str | None
    label: str | None


@dataclass
class ChatRequest:
    text: str
    conversation_id: str | None = None
    model: str = BASE  # "base" or an adapter name
    system_prompt: str | None = None  # None keeps the conversation's
    options: GenerationOptions = GenerationOptions()
    rag: bool | None = None  # None keeps the conversation's setting
    k: int = 4
    # Earlier turns supplied by the caller (the OpenAI API sends the whole exchange with every
    # request); only for a new conversation, where they are logged before the new message.
    history: list[dict] | None = None
    source: str = "chat"  # who sent it: "chat" (web UI / CLI) or "api"; stored on every message
    no_source: str | None = None  # "answer" or "decline" (NO_SOURCE_POLICIES); None: the service default
    # Regenerate: answer the conversation's last user message again (text is not used). The
    # new reply replaces the last one in the conversation; the old one is kept, out of the
    # thread, with its rating (ConversationLog.supersede).
    regenerate: bool = False


class ChatService:
    def __init__(
        self,
        engine: ChatEngine,
        log_: ConversationLog,
        adapters: AdapterCatalog,
        retriever: Retriever | None = None,
        no_source: str = DEFAULT_NO_SOURCE,
        second_models: SecondModels | None = None,
    ):
        self.engine = engine
        self.second_models = second_models  # full checkpoints (None: only LoRA adapters are offered)
        self.log = log_
        self.adapters = adapters
        # Adapters registered by folder path through /v1/load_lora_adapter (another Tailor using
        # this one as its engine): offered and routed beside the workspace's own.
        self.served = ServedAdapters(engine, adapters)
        self.retriever = retriever
        self.no_source = check_no_source(no_source)
        self._running: dict[str, Turn] = {}
        self._running_lock = threading.Lock()

    # ---- models -------------------------------------------------------------------------
    def models(self) -> list[str]:
        """What the model picker offers: the base model and every published adapter (and
        full fine-tuned checkpoint)."""
        own = self.adapters.names()
        return [BASE] + own + [n for n in self.served.names() if n not in own]

    def default_model(self) -> str:
        return self.adapters.active() or BASE

    def route(self, model: str | None) -> Route:
        """Which engine answers for `model`, with what adapter, loading it if needed: the base
        engine for the base and for LoRA adapters (hot-loaded, no base reload); a second engine
        for a full checkpoint (assistant/second_model.py)."""
        if model in (None, "", BASE):
            return Route(self.engine, None, None)
        served = self.served.get(model)
        if served is not None:
            self.engine.load_adapter(model, served[0], version=served[1])
            return Route(self.engine, model, model)
        info = self.adapters.get(model)
        if info.kind == FULL:
            if self.second_models is None:
                raise ValidationError(f"{info.name!r} is a full checkpoint, and this server cannot load a second model")
            return Route(self.second_models.engine_for(info), None, info.name)
        self.engine.load_adapter(info.name, info.path, version=info.version)
        return Route(self.engine, info.name, info.name)

    # ---- chatting -----------------------------------------------------------------------
    def send(self, request: ChatRequest) -> Turn:
        # Everything that can reject the request runs before anything is written, so a bad
        # request leaves no half-saved conversation behind.
        conv = self.log.get(request.conversation_id) if request.conversation_id else None
        replaces, asked = self._regenerating(conv) if request.regenerate else (None, None)
        text = asked.content if asked is not None else (request.text or "").strip()
        if not text:
            raise ValidationError("the message is empty")
        rag = request.rag if request.rag is not None else bool(conv and conv.rag)
        if rag and self.retriever is None:
            raise ValidationError("retrieval is not available: add documents in the Knowledge tab first")
        no_source = check_no_source(request.no_source or self.no_source)
        if conv is not None and request.history:
            raise ValidationError("earlier messages can only be sent when starting a new conversation")
        new_history = _check_history(request.history) if conv is None else []
        # the options are checked against the base model's context window before routing: a full
        # checkpoint is a fine-tune of the same base (the same window), and routing to one loads
        # a second model, which a request that is refused anyway must not cost
        request.options.validate(self.engine.context_window)
        route = self.route(request.model)
        if route.engine is not self.engine:
            request.options.validate(route.engine.context_window)
        adapter = route.label  # what the conversation records: the adapter or checkpoint name
        retrieval = self.retriever.retrieve(text, k=request.k) if rag and self.retriever is not None else None
        declined = retrieval is not None and retrieval.abstain and no_source == "decline"
        system_prompt = (
            request.system_prompt if request.system_prompt is not None else (conv.system_prompt if conv else "")
        )
        if conv is None:
            history = new_history
        else:  # a regenerated reply is answered from the turns before its user message
            earlier = conv.messages if asked is None else [m for m in conv.messages if m.id < asked.id]
            history = [m.as_chat() for m in earlier]
        passages = retrieval.passages if retrieval and not retrieval.abstain else None
        messages = build_messages(history, text, system_prompt, passages)
        options = reading_options(request.options, text, passages)
        if not declined:
            messages, options = answer_focus(options, route.engine, messages, text, passages, route.adapter)
        generation = None if declined else route.engine.stream(messages, options, adapter=route.adapter)
        if conv is None:
            conv = self.log.create(system_prompt=system_prompt, model=self.engine.name, adapter=adapter, rag=rag)
            self.log.add_history(conv.id, history, source=request.source)
        else:
            updates = {k: v for k, v in {"system_prompt": system_prompt, "rag": rag}.items() if v != getattr(conv, k)}
            if updates:
                self.log.update(conv.id, **updates)
        if asked is None:
            if adapter != conv.adapter:  # switching model mid-conversation is recorded
                self.log.update(conv.id, adapter=adapter)
            user_msg = self.log.add_message(conv.id, "user", text, source=request.source)
        else:
            user_msg = asked
        turn = Turn(conv.id, user_msg, generation, retrieval, no_source, replaces=replaces)
        with self._running_lock:
            self._running[conv.id] = turn
        threading.Thread(
            target=self._finish,
            args=(turn, options, adapter, request.source),
            daemon=True,
            name="tailor-store-reply",
        ).start()
        return turn

    def _regenerating(self, conv) -> tuple[StoredMessage, StoredMessage]:
        """(the reply to replace, the user message it answered) for Regenerate, or why not."""
        if conv is None:
            raise ValidationError("there is no conversation to regenerate a reply in: send a message first")
        last = conv.messages[-1] if conv.messages else None
        if last is None or last.role != "assistant":
            raise ValidationError("only the last reply can be regenerated, and this conversation does not end with one")
        asked = next((m for m in reversed(conv.messages) if m.role == "user" and m.id < last.id), None)
        if asked is None:
            raise ValidationError("the last reply answers no message of yours, so there is nothing to regenerate")
        with self._running_lock:
            if conv.id in self._running:
                raise ValidationError("a reply is still being written in this conversation: stop it first")
        return last, asked

    def chat(self, request: ChatRequest) -> tuple[Turn, StoredMessage]:
        """Blocking convenience for the CLI and tests."""
        turn = self.send(request)
        return turn, turn.wait()

    def stop(self, conversation_id: str) -> bool:
        try:  # only a conversation this user may see (accounts: another's reply keeps going)
            self.log.get(conversation_id, with_messages=False, deleted=True)
        except NotFoundError:
            return False
        with self._running_lock:
            turn = self._running.get(conversation_id)
        if turn is None:
            return False
        turn.stop()
        return True

    def _finish(self, turn: Turn, options: GenerationOptions, adapter: str | None, source: str = "chat") -> None:
        try:
            retrieval_info = None
            if turn.retrieval is not None:
                # "abstained": no passage supported an answer, so none was in the prompt (the
                # passages listed are only the closest ones); "declined": the reply is the
                # no-source reply; otherwise the model answered without sources.
                retrieval_info = {
                    "abstained": turn.retrieval.abstain,
                    "declined": turn.declined,
                    "no_source": turn.no_source,
                    "reason": turn.retrieval.reason,
                    "passages": [p.as_dict() for p in turn.retrieval.passages],
                }
            if turn.generation is None:  # declined: no source good enough, do not guess
                turn.reply = self.log.add_message(
                    turn.conversation_id,
                    "assistant",
                    NO_SOURCE_REPLY,
                    model=self.engine.name,
                    adapter=adapter,
                    settings=options.as_dict(),
                    latency_ms=0.0,
                    prompt_tokens=0,
                    completion_tokens=0,
                    finish_reason="no_source",
                    retrieval=retrieval_info,
                    source=source,
                )
                if turn.replaces is not None:
                    self.log.supersede(turn.replaces.id, turn.reply.id)
                return
            result = turn.generation.wait()
            turn.reply = self.log.add_message(
                turn.conversation_id,
                "assistant",
                result.text,
                model=result.model,
                adapter=adapter,
                settings=options.as_dict(),
                latency_ms=result.latency_s * 1000,
                ttft_ms=result.ttft_s * 1000 if result.ttft_s is not None else None,
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                finish_reason=result.finish_reason,
                retrieval=retrieval_info,
                source=source,
            )
            if turn.replaces is not None:
                self.log.supersede(turn.replaces.id, turn.reply.id)
            if result.error:
                log.warning("reply in %s ended with an error: %s", turn.conversation_id, result.error)
        except BaseException as exc:
            log.exception("could not store the reply")
            turn.error = exc
        finally:
            with self._running_lock:
                if self._running.get(turn.conversation_id) is turn:
                    del self._running[turn.conversation_id]
            turn._stored.set()


def check_no_source(policy: str) -> str:
    if policy not in NO_SOURCE_POLICIES:
        raise ValidationError(f"no_source must be one of {', '.join(NO_SOURCE_POLICIES)}, not {policy!r}")
    return policy


def _check_history(history: list[dict] | None) -> list[dict]:
    checked = []
    for i, m in enumerate(history or []):
        if (
            not isinstance(m, dict)
            or m.get("role") not in ("user", "assistant")
            or not isinstance(m.get("content"), str)
        ):
            raise ValidationError(f"earlier message {i} must be {{'role': 'user'|'assistant', 'content': str}}")
        checked.append({"role": m["role"], "content": m["content"]})
    return checked
