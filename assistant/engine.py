"""The chat engine's interface: one base model, any number of named LoRA adapters on top of it
that can be switched per request without reloading the base, and streamed generation.

Two backends implement it (assistant/backends.py picks one, TAILOR_ENGINE overrides):

- `TorchEngine` (assistant/torch_engine.py): transformers + PEFT, one generation at a time.
  GPUs, and the fallback everywhere.
- `LlamaCppEngine` (assistant/llamacpp_engine.py): llama.cpp on CPUs, concurrent requests
  decoded together in one batch, LoRA adapters in llama.cpp's GGUF format applied per batch,
  and a prompt cache per sequence that scoring and replies share.

Both score given text themselves (`span_logprobs` for the answer choice, `score` for reference
losses); the remote backend (assistant/remote_engine.py) scores on a local torch copy.

What is shared lives here: the prompt (every backend tokenizes with the model's Hugging Face
tokenizer and chat template, so a prompt is the same token ids on both and the context budget
is counted the same way), the history trimming, and option checks."""

from __future__ import annotations

import collections
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from .errors import ModelError, ValidationError
from .generation import (
    MIN_SAMPLING_TEMPERATURE,
    Generation,
    GenerationOptions,
    GenerationResult,
    Message,
)
from .hardware import Hardware

__all__ = [
    "MIN_SAMPLING_TEMPERATURE",
    "ChatEngine",
    "Generation",
    "GenerationOptions",
    "GenerationResult",
    "Message",
    "ReplyDecoder",
    "require_safetensors",
]

log = logging.getLogger(__name__)


def require_safetensors(folder: Path, what: str) -> None:
    """Refuse a model or adapter folder whose weights are not safetensors. Pickle-based
    weights (pytorch_model.bin, adapter_model.bin, *.pt) can run arbitrary code when loaded,
    and these folders may come from anywhere (a download, an import, an upload)."""
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return  # a missing folder gets its own, clearer error from the loader
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")) or any(folder.glob("*.pth")):
        raise ModelError(
            f"The {what} in {folder} has only pickle-based weights (.bin/.pt). Tailor loads safetensors only, "
            "because pickle files can run code when loaded. Convert it once in a trusted environment "
            "(load it and call save_pretrained(..., safe_serialization=True))."
        )


class ReplyDecoder:
    """Turns the reply's token ids into its text as they arrive. It decodes the whole reply
    each time (not token by token), which keeps multi-byte characters and merged tokens right;
    a few hundred tokens cost microseconds. `add` returns the new text, or None while the last
    token ends inside a multi-byte character."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []

    def add(self, token: int) -> str | None:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        return None if text.endswith("\ufffd") else text

    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True).strip()


class SpanFollower:
    """A followed focus (`GenerationOptions.focus_follow`) for one reply: `biases(generated)`,
    called before each token with the reply's tokens so far, gives the token after the longest
    part of a span sequence that the reply ends with (the span's first token while the reply
    ends with none of it) `bias`, and nothing from the moment the reply holds a whole sequence.
    Both backends call it at each step before the repetition penalty, so they steer alike."""

    def __init__(self, sequences: Sequence[Sequence[int]], bias: float):
        self.sequences = [list(s) for s in sequences if s]
        self.bias = bias
        self.done = not self.sequences or bias <= 0

    def biases(self, generated: Sequence[int]) -> dict[int, float]:
        if self.done:
            return {}
        tail = list(generated[-max(len(s) for s in self.sequences) :])
        if any(len(tail) >= len(s) and tail[-len(s) :] == s for s in self.sequences):
            self.done = True  # written in full: the rest of the reply is the model's own
            return {}
        out: dict[int, float] = {}
        for seq in self.sequences:
            k = next((k for k in range(min(len(seq) - 1, len(tail)), 0, -1) if tail[-k:] == seq[:k]), 0)
            out[seq[k]] = self.bias
        return out


class ChatEngine(ABC):
    """The interface every backend implements, and the prompt handling they share.

    Subclasses set `backend`, `parallel` (how many requests they decode at once) and implement
    `load_adapter`, `unload_adapter`, `_start` and `score`."""

    backend = "none"
    parallel = 1  # requests decoded together; the request queue in front sizes itself on it

    def __init__(self, tokenizer, *, name: str, hardware: Hardware, context_window: int):
        self.tokenizer = tokenizer
        self.name = name
        self.hardware = hardware
        self.context_window = context_window
        self._adapters: dict[str, str] = {}  # name -> version key of the folder it was loaded from
        if tokenizer.chat_template is None:
            raise ModelError(f"Model {name} has no chat template; Tailor needs an instruct/chat model.")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    def describe(self) -> str:
        """Where and how it runs, for the log line at start and the UI header."""
        return f"{self.backend} on {self.hardware.describe()}"

    # ---- adapters ----------------------------------------------------------------------
    @property
    def adapters(self) -> list[str]:
        return sorted(self._adapters)

    @abstractmethod
    def load_adapter(self, name: str, path: Path, version: str | None = None) -> None:
        """Load a LoRA adapter under `name`; reload it if `version` (default: the folder path)
        differs from the one loaded, e.g. after an adapter was re-published under its name."""
        ...

    @abstractmethod
    def unload_adapter(self, name: str) -> None:
        """Forget the adapter `name` (no error if it is not loaded)."""

    def _check_adapter(self, adapter: str | None) -> None:
        if adapter is not None and adapter not in self._adapters:
            raise ValidationError(f"adapter {adapter!r} is not loaded")

    # ---- prompts -----------------------------------------------------------------------
    def encode(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
        out = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True
        )
        return list(out["input_ids"])

    def copy_ids(self, options: GenerationOptions) -> list[int]:
        """The token ids `options.copy_bias` favours: every token of the sources' text, without
        special tokens (both backends use the Hugging Face tokenizer's ids)."""
        if options.copy_bias <= 0 or not options.copy_source.strip():
            return []
        ids = set(self.tokenizer(options.copy_source, add_special_tokens=False)["input_ids"])
        return sorted(ids - set(self.tokenizer.all_special_ids))

    def _span_ids(self, text: str) -> list[int]:
        # " €689" and "€689" tokenize differently: a span is favoured however it is preceded
        ids = set(self.tokenizer(text.strip(), add_special_tokens=False)["input_ids"])
        ids |= set(self.tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"])
        return sorted(ids - set(self.tokenizer.all_special_ids))

    def logit_biases(self, options: GenerationOptions) -> dict[int, float]:
        """Token id -> logit added at every step while decoding: the sources' tokens get
        `copy_bias`, the chosen answer span's tokens `focus_bias` (when higher; not when the
        span is followed, see `focus_sequences`). Empty for a plain chat."""
        biases = dict.fromkeys(self.copy_ids(options), options.copy_bias)
        if options.focus_bias > 0 and options.focus_text.strip() and not options.focus_follow:
            for t in self._span_ids(options.focus_text):
                biases[t] = max(biases.get(t, 0.0), options.focus_bias)
        return biases

    def focus_sequences(self, options: GenerationOptions) -> list[list[int]]:
        """The token sequences of the chosen span that a followed focus steers along (as the
        span tokenizes on its own and after a space); empty when the span is not followed."""
        text = options.focus_text.strip()
        if options.focus_bias <= 0 or not text or not options.focus_follow:
            return []
        special = set(self.tokenizer.all_special_ids)
        out: list[list[int]] = []
        for variant in (text, " " + text):
            ids = [t for t in self.tokenizer(variant, add_special_tokens=False)["input_ids"] if t not in special]
            if ids and ids not in out:
                out.append(ids)
        return out

    def score_inputs(self, messages: Sequence[Message], completion: str) -> tuple[list[int], int]:
        """The token ids of `messages` followed by `completion` as the assistant's reply (its
        end-of-turn marker included), and where the reply starts: what `score` reads. When the
        whole is longer than the context, the prompt's start is cut (the reply is kept whole)."""
        if not (completion or "").strip():
            raise ValidationError("the reference answer is empty")
        prompt = self.encode(messages, add_generation_prompt=True)
        full = self.encode(list(messages) + [{"role": "assistant", "content": completion}], add_generation_prompt=False)
        if full[: len(prompt)] != prompt:  # a template that rewrites earlier turns: append instead
            full = prompt + self.tokenizer(completion, add_special_tokens=False)["input_ids"]
            if self.tokenizer.eos_token_id is not None:
                full.append(self.tokenizer.eos_token_id)
        start = len(prompt)
        if len(full) <= start:
            raise ValidationError("the reference answer has no tokens")
        overflow = len(full) - self.context_window
        if overflow > 0:  # keep the reply whole and as much of the prompt's end as fits
            if overflow >= start:
                raise ValidationError(
                    f"the reference answer alone is longer than the context ({self.context_window} tokens)"
                )
            full, start = full[overflow:], start - overflow
        return full, start

    def span_inputs(
        self, messages: Sequence[Message], prefix: str, spans: Sequence[str]
    ) -> tuple[list[int], list[list[int]]]:
        """The prompt ids (`messages`, the assistant's turn opened, then `prefix`) and each
        span's ids, as `span_logprobs` scores them: an empty span is the end token, and a prompt
        too long for the context loses its start (the question is at its end)."""
        prompt = self.encode(messages, add_generation_prompt=True)
        if prefix:
            prompt += self.tokenizer(prefix, add_special_tokens=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        conts = [self.tokenizer(s, add_special_tokens=False)["input_ids"] or [eos] for s in spans]
        longest = max((len(c) for c in conts), default=0)
        return prompt[-(self.context_window - longest) :], conts

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.encode(messages))

    def fit_messages(self, messages: Sequence[Message], max_new_tokens: int) -> tuple[list[Message], int]:
        """Trim history to fit the context: keep the system prompt and the newest turns, drop
        the oldest (a kept history starts with a user turn). If the newest message alone is too
        long, keep its end. Returns the kept messages and how many were dropped.

        Near-linear in the history, whatever its length: every message costs at least one
        token, so at most `budget` of the newest can ever fit and the rest is cut without being
        tokenized; then a binary search over the turn starts finds the longest suffix that fits,
        each probe encoding at most that bounded suffix (O(budget * log budget) tokens in all).
        Dropping one message at a time and re-counting the whole history each time was worse
        than quadratic: 10,000 one-word turns held the engine for over ten minutes."""
        budget = self.context_window - max_new_tokens
        system = [m for m in messages if m["role"] == "system"]
        rest = [m for m in messages if m["role"] != "system"]
        if not rest:
            raise ValidationError("there is no user message to answer")
        dropped = 0
        if len(rest) > budget:  # cannot fit anyway: each message is at least one token
            dropped = len(rest) - budget
            rest = rest[dropped:]
        # Where a kept history may start: the very first message when nothing was cut, else a
        # user turn, or the newest message (always kept).
        first = {0} if not dropped else set()
        starts = sorted(first | {i for i, m in enumerate(rest[:-1]) if m["role"] == "user"} | {len(rest) - 1})
        if len(starts) == 1 or self.count_tokens(system + rest[starts[0] :]) <= budget:
            chosen = starts[0]
        else:  # fewer tokens the later the start: the first start that fits, by bisection
            lo, hi = 1, len(starts) - 1  # starts[0] does not fit; starts[-1] is kept regardless
            while lo < hi:
                mid = (lo + hi) // 2
                if self.count_tokens(system + rest[starts[mid] :]) <= budget:
                    hi = mid
                else:
                    lo = mid + 1
            chosen = starts[lo]
        dropped += chosen
        rest = rest[chosen:]
        overflow = self.count_tokens(system + rest) - budget
        if overflow > 0:
            last = rest[-1]
            ids = self.tokenizer(last["content"], add_special_tokens=False)["input_ids"]
            keep = len(ids) - overflow - 8  # a little slack: re-tokenizing may merge differently
            if keep <= 0:
                raise ValidationError(
                    f"the system prompt alone needs more than the model's context ({self.context_window} tokens)"
                )
            rest = rest[:-1] + [{**last, "content": self.tokenizer.decode(ids[-keep:])}]
        return system + rest, dropped

    # ---- generation --------------------------------------------------------------------
    def stream(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, adapter: str | None = None
    ) -> Generation:
        """Start generating a reply and return at once; iterate the Generation for its text."""
        options = (options or GenerationOptions()).validate(self.context_window)
        self._check_adapter(adapter)
        fitted, dropped = self.fit_messages(messages, options.max_new_tokens)
        gen = Generation()
        gen.result = GenerationResult(model=self.name, adapter=adapter, dropped_messages=dropped)
        self._start(gen, fitted, options, adapter)
        return gen

    def generate(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, adapter: str | None = None
    ) -> GenerationResult:
        gen = self.stream(messages, options, adapter)
        for _ in gen:
            pass
        return gen.wait()

    def generate_many(
        self,
        requests: Sequence[tuple[Sequence[Message], GenerationOptions | None, str | None]],
    ) -> list[GenerationResult]:
        """Answer many requests, `parallel` of them in flight at a time, in their order. A
        batching backend decodes those together (an evaluation run's items, for example)."""
        results: list[GenerationResult] = [GenerationResult() for _ in requests]
        in_flight: collections.deque[tuple[int, Generation]] = collections.deque()
        for i, request in enumerate(requests):
            if len(in_flight) >= max(1, self.parallel):
                j, gen = in_flight.popleft()
                results[j] = gen.wait()
            in_flight.append((i, self.stream(*request)))
        for j, gen in in_flight:
            results[j] = gen.wait()
        return results

    @abstractmethod
    def _start(self, gen: Generation, messages: list[Message], options: GenerationOptions, adapter: str | None) -> None:
        """Begin generating `messages` (already fitted to the context) into `gen`."""
        ...

    @abstractmethod
    def score(self, messages: Sequence[Message], completion: str, adapter: str | None = None) -> tuple[float, int]:
        """Mean cross-entropy (nats/token) of `completion` as the assistant's reply to
        `messages`, under `adapter` (None: the base model), and how many tokens it covers."""
        ...

    def span_logprobs(
        self, messages: Sequence[Message], prefix: str, spans: Sequence[str], adapter: str | None = None
    ) -> list[tuple[float, int]]:
        """(total log-probability, tokens) of each of `spans` continuing the assistant's reply
        to `messages` after `prefix`, under `adapter`: how answers are chosen from the sources
        (assistant/answer_choice.py). A backend without logits of given text (the remote one)
        uses a local torch scorer."""
        return self._torch_scorer(adapter).span_logprobs(messages, prefix, spans, adapter)

    def _torch_scorer(self, adapter: str | None) -> ChatEngine:
        """The torch engine that scores text for a backend that keeps no logits of given text
        (a remote server), with `adapter` loaded."""
        raise ModelError(f"the {self.backend} backend cannot score text")

    def close(self) -> None:  # noqa: B027 - optional: only backends with native resources override it
        """Free what the backend holds outside Python's memory (threads, native buffers)."""
