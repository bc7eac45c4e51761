"""What a generation is, whichever backend runs it: the options a request may set, the result
it gets, and the `Generation` handle a caller iterates for streamed text and can stop.

Backends (assistant/torch_engine.py, assistant/llamacpp_engine.py) fill a `Generation` from
their own thread: `_push(text)` for each growing reply, `_finish()` once at the end."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import ValidationError

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}
MIN_SAMPLING_TEMPERATURE = 0.01  # lower temperatures decode greedily (see _run)
MAX_COPY_BIAS = 10.0  # logits; beyond a few the reply becomes a collage of the sources


@dataclass(frozen=True)
class GenerationOptions:
    temperature: float = 0.3  # 0 (or anything below 0.01) means greedy decoding
    top_p: float = 0.9
    max_new_tokens: int = 256
    repetition_penalty: float = 1.05  # small models loop without a little of this
    seed: int | None = None
    # Reading from sources: the answering path (assistant.prompting.reading_options) sets these
    # when passages are in the prompt. `copy_bias` is added to the logits of every token that
    # occurs in `copy_source` (the sources as the model is shown them), nudging a small model to
    # copy the answer's span instead of paraphrasing it wrongly; `penalize_prompt` False keeps
    # the repetition penalty to the reply's own tokens, so it stops fighting that copying
    # (transformers' default, True, also penalises every token of the prompt).
    copy_bias: float = 0.0
    copy_source: str = ""
    penalize_prompt: bool = True
    # The answer span chosen from the sources (assistant/answer_choice.py): its tokens get
    # `focus_bias` instead of `copy_bias`, so the reply states that span rather than a
    # neighbouring figure of the same sentence.
    focus_bias: float = 0.0
    focus_text: str = ""
    # How the span is favoured. False: every token of it, all through the reply. True
    # ("follow"): only the span's next token, given how much of the span the reply has just
    # written (its first token until it starts), and nothing once the span is written in full,
    # so a figure like "€275" is stated once instead of looping on its digits
    # (`assistant.engine.follow_biases`).
    focus_follow: bool = False
    # Decode so that the reply does not depend on what else is decoding (evaluations): on the
    # llama.cpp backend a step that would hold this request's one token alone gets a second,
    # throw-away row, because llama.cpp multiplies one row with other kernels than several and
    # an adapter's f32 products then round differently (README: Engine, "Attention"). Costs a
    # little on the steps where the request decodes alone; other backends decode one at a time.
    batch_invariant: bool = False
    # Nobody reads this reply as it streams (evaluations). On the llama.cpp backend a new prompt
    # beside replies that are watched is read in short chunks, so they keep streaming; beside
    # background replies only, it is read in whole batches, which answers a batch of questions
    # about 8% sooner (README: Engine, "Batching").
    background: bool = False

    def validate(self, context_window: int) -> GenerationOptions:
        if not 0 <= self.temperature <= 2:
            raise ValidationError("temperature must be between 0 and 2")
        if not 0 < self.top_p <= 1:
            raise ValidationError("top_p must be in (0, 1]")
        if not 1 <= self.max_new_tokens <= context_window // 2:
            raise ValidationError(f"max_new_tokens must be between 1 and {context_window // 2} for this model")
        if self.seed is not None and not -(2**63) <= self.seed < 2**63:  # torch and llama.cpp seeds fit in 64 bits
            raise ValidationError("seed must fit in a signed 64-bit integer")
        if not 0 <= self.copy_bias <= MAX_COPY_BIAS:
            raise ValidationError(f"copy_bias must be between 0 and {MAX_COPY_BIAS:g}")
        if not 0 <= self.focus_bias <= MAX_COPY_BIAS:
            raise ValidationError(f"focus_bias must be between 0 and {MAX_COPY_BIAS:g}")
        return self

    def as_dict(self) -> dict:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
            "copy_bias": self.copy_bias,
            "penalize_prompt": self.penalize_prompt,
            "focus_bias": self.focus_bias,
            "focus_text": self.focus_text,
            "focus_follow": self.focus_follow,
        }


@dataclass
class GenerationResult:
    text: str = ""
    prompt_tokens: int = 0
    cached_tokens: int = 0  # of the prompt, read from a cache instead of decoded (llama.cpp backend)
    completion_tokens: int = 0
    finish_reason: str = "stop"  # "stop" (end of turn), "length", "stopped" (by request), "error"
    latency_s: float = 0.0  # request to last token
    ttft_s: float | None = None  # request to first visible text
    dropped_messages: int = 0  # oldest history messages left out to fit the context
    model: str = ""
    adapter: str | None = None
    error: str | None = None

    @property
    def decode_tokens_per_s(self) -> float:
        decode_time = self.latency_s - (self.ttft_s or 0.0)
        return (self.completion_tokens - 1) / decode_time if self.completion_tokens > 1 and decode_time > 0 else 0.0


_DONE = object()


class Generation:
    """A running generation. Iterate to get the reply so far (a growing string); `stop()`
    ends it early; `wait()` returns the GenerationResult once it has finished."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._finished = threading.Event()
        self.result = GenerationResult()
        self.text = ""

    def stop(self) -> None:
        self._stop.set()

    # ---- for backends ----------------------------------------------------------------
    def _push(self, text: str) -> None:
        """The reply so far (the whole text, not a delta)."""
        self._queue.put(text)

    def _finish(self) -> None:
        """Called once, after `result` is complete: ends iteration and releases `wait()`."""
        self._queue.put(_DONE)
        self._finished.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def done(self) -> bool:
        """Finished: `wait()` returns at once."""
        return self._finished.is_set()

    def __iter__(self) -> Iterator[str]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            self.text = item
            yield item

    def wait(self, timeout: float | None = None) -> GenerationResult:
        if not self._finished.wait(timeout):
            raise TimeoutError("generation did not finish in time")
        return self.result
