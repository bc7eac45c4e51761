"""One way for a handler to show an error: `@shows_errors` turns a `TailorError` (a message
meant for the user) raised by the handler into `gr.Error`, which Gradio shows in the page.
Errors of other kinds stay what they are (a bug shows as one). Works for plain handlers and
for streaming (generator) ones; Gradio still sees the handler's own signature (gr.Progress,
gr.SelectData and gr.LikeData parameters are found through functools.wraps)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import gradio as gr

from assistant.errors import TailorError


def _shown(exc: BaseException) -> gr.Error:
    return gr.Error(str(exc))


def shows_errors(fn: Callable | None = None, *, also: tuple[type[BaseException], ...] = ()) -> Callable:
    """Decorate a handler: `@shows_errors`, or `@shows_errors(also=(ValueError,))` for a handler
    whose input parsing (int("x")) raises errors that are the user's to fix too."""
    kinds = (TailorError, *also)

    def decorate(handler: Callable) -> Callable:
        if inspect.isgeneratorfunction(handler):

            @functools.wraps(handler)
            def stream(*args, **kwargs):
                try:
                    yield from handler(*args, **kwargs)
                except gr.Error:
                    raise
                except kinds as exc:
                    raise _shown(exc) from exc

            return stream

        @functools.wraps(handler)
        def call(*args, **kwargs):
            try:
                return handler(*args, **kwargs)
            except gr.Error:
                raise
            except kinds as exc:
                raise _shown(exc) from exc

        return call

    return decorate(fn) if fn is not None else decorate
