"""The chat engine: one base model in memory, any number of named LoRA adapters on top of it,
and streaming generation in a background thread.

Adapters are hot-swapped with PEFT (`load_adapter` / `set_adapter`); `disable_adapter()`
gives the base model, so switching between base and adapters never reloads the base weights.
One generation runs at a time (a lock): the weights, and which adapter is active, are shared
state. Callers that need concurrency queue on that lock."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ModelError, ValidationError
from .hardware import Hardware, pick_hardware
from .models import ResolvedModel

log = logging.getLogger(__name__)

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}
MIN_SAMPLING_TEMPERATURE = 0.01  # lower temperatures decode greedily (see _run)


@dataclass(frozen=True)
class GenerationOptions:
    temperature: float = 0.3  # 0 (or anything below 0.01) means greedy decoding
    top_p: float = 0.9
    max_new_tokens: int = 256
    repetition_penalty: float = 1.05  # small models loop without a little of this
    seed: int | None = None

    def validate(self, context_window: int) -> GenerationOptions:
        if not 0 <= self.temperature <= 2:
            raise ValidationError("temperature must be between 0 and 2")
        if not 0 < self.top_p <= 1:
            raise ValidationError("top_p must be in (0, 1]")
        if not 1 <= self.max_new_tokens <= context_window // 2:
            raise ValidationError(f"max_new_tokens must be between 1 and {context_window // 2} for this model")
        if self.seed is not None and not -(2**63) <= self.seed < 2**63:  # torch seeds are 64-bit
            raise ValidationError("seed must fit in a signed 64-bit integer")
        return self

    def as_dict(self) -> dict:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
        }


@dataclass
class GenerationResult:
    text: str = ""
    prompt_tokens: int = 0
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


class _TextQueueStreamer:
    """A transformers streamer that decodes the whole completion after every token and puts
    the growing text on a queue. Decoding everything (not token by token) keeps multi-byte
    characters and merged tokens right; a few hundred tokens cost microseconds to decode."""

    def __init__(self, tokenizer, out: queue.Queue):
        self.tokenizer = tokenizer
        self.out = out
        self.ids: list[int] = []
        self._seen_prompt = False
        self.first_token_at: float | None = None

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:  # generate() first passes the prompt
            self._seen_prompt = True
            return
        self.ids.extend(value.reshape(-1).tolist())
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            self.out.put(text)

    def end(self) -> None:
        pass


class _StopOnEvent:
    """Stopping criterion that ends generation when a threading.Event is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


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

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

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


class ChatEngine:
    def __init__(self, model, tokenizer, *, name: str, hardware: Hardware, max_context: int = 2048):
        self.base_model = model
        self.model = model  # becomes a PeftModel once the first adapter is loaded
        self.tokenizer = tokenizer
        self.name = name
        self.hardware = hardware
        model_limit = getattr(model.config, "max_position_embeddings", None) or max_context
        self.context_window = min(max_context, model_limit)
        self._adapters: dict[str, str] = {}  # name -> version key of the folder it was loaded from
        self._lock = threading.Lock()
        if tokenizer.chat_template is None:
            raise ModelError(f"Model {name} has no chat template; Tailor needs an instruct/chat model.")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    # ---- loading -----------------------------------------------------------------------
    @classmethod
    def load(cls, resolved: ResolvedModel, hardware: Hardware | None = None, max_context: int = 2048) -> ChatEngine:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        hardware = hardware or pick_hardware()
        require_safetensors(Path(resolved.path), "model")
        try:
            tokenizer = AutoTokenizer.from_pretrained(resolved.path)
            # safetensors only: pickle-based .bin/.pt weights can run code when loaded
            model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=hardware.dtype, use_safetensors=True)
        except Exception as exc:
            raise ModelError(
                f"Could not load model {resolved.name} from {resolved.path}: {exc}. If it is the converted "
                "default model, delete that folder and start again to re-convert it; otherwise check "
                "TAILOR_MODEL / --model."
            ) from exc
        model.to(hardware.device)  # type: ignore[arg-type]  # a device string is accepted
        model.eval()  # generation in training mode (dropout, checkpointing) produces garbage
        log.info("Loaded %s on %s", resolved.name, hardware.describe())
        return cls(model, tokenizer, name=resolved.name, hardware=hardware, max_context=max_context)

    # ---- adapters ----------------------------------------------------------------------
    @property
    def adapters(self) -> list[str]:
        return sorted(self._adapters)

    def load_adapter(self, name: str, path: Path, version: str | None = None) -> None:
        """Load a LoRA adapter under `name`; reload it if `version` (default: the folder path)
        differs from the one loaded, e.g. after an adapter was re-published under its name."""
        from peft import PeftModel

        path = Path(path)
        version = version or str(path)
        require_safetensors(path, "adapter")
        with self._lock:
            if name in self._adapters:
                if self._adapters[name] == version:
                    return
                self.model.delete_adapter(name)
                del self._adapters[name]
            try:
                if not self._adapters and not isinstance(self.model, PeftModel):
                    self.model = PeftModel.from_pretrained(self.base_model, path, adapter_name=name, is_trainable=False)
                else:
                    self.model.load_adapter(path, adapter_name=name, is_trainable=False)
            except Exception as exc:
                raise ModelError(f"Could not load adapter {name!r} from {path}: {exc}") from exc
            self.model.eval()
            self._adapters[name] = version

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            if name not in self._adapters:
                return
            if len(self._adapters) == 1:
                # Last adapter: take the LoRA layers out entirely and go back to the plain base
                # model (a PeftModel with no adapter left cannot even run disable_adapter()).
                self.base_model = self.model.unload()
                self.model = self.base_model
            else:
                self.model.delete_adapter(name)
            del self._adapters[name]

    def _use(self, adapter: str | None):
        """Context in which the model answers as `adapter` (None: the base model)."""
        if adapter is None:
            return self.model.disable_adapter() if self._adapters else nullcontext()
        if adapter not in self._adapters:
            raise ValidationError(f"adapter {adapter!r} is not loaded")
        self.model.set_adapter(adapter)
        return nullcontext()

    # ---- prompts -----------------------------------------------------------------------
    def encode(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
        out = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True
        )
        return list(out["input_ids"])

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
        """Start generating a reply in a background thread and return at once."""
        options = (options or GenerationOptions()).validate(self.context_window)
        if adapter is not None and adapter not in self._adapters:
            raise ValidationError(f"adapter {adapter!r} is not loaded")
        fitted, dropped = self.fit_messages(messages, options.max_new_tokens)
        gen = Generation()
        gen.result = GenerationResult(model=self.name, adapter=adapter, dropped_messages=dropped)
        thread = threading.Thread(
            target=self._run, args=(gen, fitted, options, adapter), daemon=True, name="tailor-generate"
        )
        thread.start()
        return gen

    def generate(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, adapter: str | None = None
    ) -> GenerationResult:
        gen = self.stream(messages, options, adapter)
        for _ in gen:
            pass
        return gen.wait()

    def _run(self, gen: Generation, messages: list[Message], options: GenerationOptions, adapter: str | None):
        started = time.perf_counter()
        res = gen.result
        streamer = _TextQueueStreamer(self.tokenizer, gen._queue)
        try:
            with self._lock:  # one generation at a time; the adapter choice is shared state
                if gen.stopped:  # stopped while waiting for the lock
                    res.finish_reason = "stopped"
                    return
                ids = self.encode(messages)
                res.prompt_tokens = len(ids)
                input_ids = torch.tensor([ids], device=self.hardware.device)
                kwargs = dict(
                    max_new_tokens=options.max_new_tokens,
                    repetition_penalty=options.repetition_penalty,
                    pad_token_id=self.tokenizer.pad_token_id,
                    streamer=streamer,
                    stopping_criteria=[_StopOnEvent(gen._stop)],
                )
                # Below ~0.01 sampling is greedy in all but name, and logits / 1e-248 overflow to
                # inf (a NaN distribution, found by the /v1 fuzz test): decode greedily there.
                if options.temperature >= MIN_SAMPLING_TEMPERATURE:
                    kwargs.update(do_sample=True, temperature=options.temperature, top_p=options.top_p)
                else:
                    kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                if options.seed is not None:
                    torch.manual_seed(options.seed)
                with self._use(adapter), torch.inference_mode():
                    output = self.model.generate(
                        input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs
                    )
            new_ids = output[0, len(ids) :].tolist()
            res.completion_tokens = len(new_ids)
            res.text = self.tokenizer.decode(new_ids, skip_special_tokens=True).strip()
            eos = self._eos_ids()
            if gen.stopped:
                res.finish_reason = "stopped"
            elif new_ids and new_ids[-1] in eos:
                res.finish_reason = "stop"
            else:
                res.finish_reason = "length" if len(new_ids) >= options.max_new_tokens else "stop"
        except Exception as exc:
            log.exception("generation failed")
            res.finish_reason = "error"
            res.error = f"{exc.__class__.__name__}: {exc}"
            res.text = self.tokenizer.decode(streamer.ids, skip_special_tokens=True).strip()
            res.completion_tokens = len(streamer.ids)
        finally:
            res.latency_s = time.perf_counter() - started
            if streamer.first_token_at is not None:
                res.ttft_s = streamer.first_token_at - started
            gen._queue.put(_DONE)
            gen._finished.set()

    def score(self, messages: Sequence[Message], completion: str, adapter: str | None = None) -> tuple[float, int]:
        """Mean cross-entropy (nats/token) of `completion` as the assistant's reply to
        `messages`, under `adapter` (None: the base model), and how many tokens it covers.
        Evaluation uses it for the loss/perplexity of reference answers. The reply's tokens
        include the template's end-of-turn marker: ending on time is part of the answer."""
        if adapter is not None and adapter not in self._adapters:
            raise ValidationError(f"adapter {adapter!r} is not loaded")
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
        ids = torch.tensor([full], device=self.hardware.device)
        with self._lock, self._use(adapter), torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        # logits at position t predict token t+1: the reply's tokens are predicted from start-1 on
        pred = logits[0, start - 1 : -1].float()
        target = ids[0, start:]
        loss = torch.nn.functional.cross_entropy(pred, target, reduction="mean")
        return float(loss), int(target.numel())

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids
