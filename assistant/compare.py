"""Compare two models side by side on the same prompt: the base model and a tuned adapter, or
any two of the chat's models, each with the documents on or off.

Each side is an ordinary conversation in the log (sent through ChatService.send, so the replies
can be rated, edited and saved as training pairs like any chat reply); a comparison goes on by
passing both conversation ids back. Nothing here talks to the engine: model names mean what
ChatService makes of them (`models()` lists them, `send` resolves and loads them), so a model
the chat learns to offer is comparable without a change here. With the torch backend the two
replies are generated one after the other (one generation at a time); with llama.cpp, together."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from .adapters import BASE
from .chat import ChatRequest, ChatService, Turn
from .conversations import StoredMessage
from .engine import GenerationOptions
from .errors import ValidationError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Side:
    """What one side of the comparison answers with, and the conversation it continues."""

    model: str
    conversation_id: str | None = None
    rag: bool | None = None  # answer from the documents; None: the comparison's `rag`


class SideBySide:
    def __init__(self, chat: ChatService):
        self.chat = chat

    def send(
        self,
        text: str,
        left_model: str = BASE,
        right_model: str | None = None,
        left_conversation_id: str | None = None,
        right_conversation_id: str | None = None,
        system_prompt: str | None = None,
        options: GenerationOptions | None = None,
        rag: bool | None = None,
        left_rag: bool | None = None,
        right_rag: bool | None = None,
    ) -> tuple[Turn, Turn]:
        """Send `text` to both sides; returns (left turn, right turn), both already running.
        `rag` turns the documents on (or off) for both sides, `left_rag` / `right_rag` for one
        (None: `rag`; both None: each conversation keeps its setting). The same model may be on
        both sides when only one of them reads the documents. Every check runs before either
        side writes anything, so a rejected request leaves no half of a comparison in the log."""
        options = options or GenerationOptions()
        left = Side(
            left_model or BASE, (left_conversation_id or "").strip() or None, rag if left_rag is None else left_rag
        )
        right = Side(
            right_model or "", (right_conversation_id or "").strip() or None, rag if right_rag is None else right_rag
        )
        self._check(text, left, right, options)
        requests = {
            name: ChatRequest(
                text=text,
                conversation_id=side.conversation_id,
                model=side.model,
                system_prompt=system_prompt,
                options=options,
                rag=side.rag,
            )
            for name, side in (("left", left), ("right", right))
        }
        # Loading an adapter is the one step left that can still fail (a broken adapter folder):
        # send the adapter sides first, the base last, so such a failure comes before anything
        # was written wherever the base is one of the two sides.
        order = sorted(requests, key=lambda name: requests[name].model == BASE)
        turns: dict[str, Turn] = {}
        for name in order:
            try:
                turns[name] = self.chat.send(requests[name])
            except BaseException:
                for sent, turn in turns.items():
                    self._undo(turn, started_new=requests[sent].conversation_id is None)
                raise
        return turns["left"], turns["right"]

    def _check(self, text: str, left: Side, right: Side, options: GenerationOptions) -> None:
        if not (text or "").strip():
            raise ValidationError("the message is empty")
        models = self.chat.models()
        for label, side in (("left", left), ("right", right)):
            if not side.model:
                raise ValidationError(f"pick a model for the {label} side")
            if side.model not in models:
                raise ValidationError(f"unknown model {side.model!r} for the {label} side (known: {', '.join(models)})")
        if left.conversation_id is not None and left.conversation_id == right.conversation_id:
            raise ValidationError("each side needs its own conversation")
        options.validate(self.chat.engine.context_window)
        wants_docs = []
        for side in (left, right):
            conv = self.chat.log.get(side.conversation_id, with_messages=False) if side.conversation_id else None
            wants_docs.append(side.rag if side.rag is not None else bool(conv and conv.rag))
        if left.model == right.model and wants_docs[0] == wants_docs[1]:
            raise ValidationError(
                f"both sides would answer with {left.model!r}: pick two different models "
                "(or the same one with the documents on one side only)"
            )
        if any(wants_docs) and self.chat.retriever is None:
            raise ValidationError("retrieval is not available: add documents in the Knowledge tab first")

    def _undo(self, turn: Turn, started_new: bool) -> None:
        """The other side failed to start: stop this one, and drop its conversation if this
        comparison created it (a continued one keeps the new turn: the log has no message delete)."""
        turn.stop()
        try:
            turn.wait(60)
        except Exception:  # noqa: BLE001 - the other side's error is the one to report
            log.warning("could not finish the reply of %s while undoing a comparison", turn.conversation_id)
        if started_new:
            self.chat.log.purge(turn.conversation_id)

    def stop(self, *conversation_ids: str | None) -> bool:
        """Stop the replies running in these conversations; True if any was running."""
        stopped = [self.chat.stop(c) for c in conversation_ids if c]
        return any(stopped)

    @staticmethod
    def stream(left: Turn, right: Turn) -> Iterator[tuple[str, str]]:
        """(left reply so far, right reply so far) each time either grows, until both have been
        stored. Each side is read in its own thread, so a side that waits for the engine (the
        torch backend runs one generation at a time) does not hold up the other one's text."""
        updates: queue.Queue[tuple[int, str | None]] = queue.Queue()

        def read(index: int, turn: Turn) -> None:
            try:
                for text in turn:
                    updates.put((index, text))
            finally:
                updates.put((index, None))

        for index, turn in enumerate((left, right)):
            threading.Thread(target=read, args=(index, turn), daemon=True, name="tailor-compare-read").start()
        texts = ["", ""]
        running = 2
        while running:
            index, text = updates.get()
            if text is None:
                running -= 1
                continue
            texts[index] = text
            yield texts[0], texts[1]

    @staticmethod
    def wait(left: Turn, right: Turn, timeout: float | None = None) -> tuple[StoredMessage, StoredMessage]:
        """Both stored replies (a side's storage error is raised here)."""
        return left.wait(timeout), right.wait(timeout)
