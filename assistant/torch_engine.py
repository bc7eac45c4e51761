"""The torch backend: transformers' `generate` with PEFT adapters, one generation at a time.

Adapters are hot-swapped with PEFT (`load_adapter` / `set_adapter`); `disable_adapter()`
gives the base model, so switching between base and adapters never reloads the base weights.
One generation runs at a time (a lock): the weights, and which adapter is active, are shared
state. Callers that need concurrency queue on that lock. It is the backend for GPUs, for
reference-loss scoring (`score`), and the fallback where llama.cpp is not available."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

from .engine import ChatEngine, ReplyDecoder, SpanFollower, require_safetensors
from .errors import ModelError, ValidationError
from .generation import MIN_SAMPLING_TEMPERATURE, Generation, GenerationOptions, Message
from .hardware import Hardware, pick_hardware
from .models import ResolvedModel

log = logging.getLogger(__name__)


class _TextQueueStreamer:
    """A transformers streamer that pushes the growing reply text to a Generation."""

    def __init__(self, tokenizer, gen: Generation):
        self.decoder = ReplyDecoder(tokenizer)
        self.gen = gen
        self._seen_prompt = False
        self.first_token_at: float | None = None

    @property
    def ids(self) -> list[int]:
        return self.decoder.ids

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:  # generate() first passes the prompt
            self._seen_prompt = True
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        text = None
        for token in value.reshape(-1).tolist():
            text = self.decoder.add(token)
        if text is not None:  # None: waiting for the rest of a multi-byte character
            self.gen._push(text)

    def end(self) -> None:
        pass


class _StopOnEvent:
    """Stopping criterion that ends generation when a threading.Event is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _LogitBias:
    """Logits processor adding a bias to the logits of some tokens (the sources' tokens, the
    chosen answer span's). It runs after the repetition penalty and before temperature and
    top-p, as llama.cpp's chain does."""

    def __init__(self, biases: dict[int, float], device):
        self.ids = torch.tensor(list(biases), dtype=torch.long, device=device)
        self.values = torch.tensor(list(biases.values()), dtype=torch.float32, device=device)

    def __call__(self, input_ids, scores):
        scores[:, self.ids] += self.values.to(scores.dtype)
        return scores


class _FollowSpan:
    """Logits processor for a followed answer span (assistant.engine.SpanFollower): the span's
    next token gets the focus bias, given the reply so far. It runs before the repetition
    penalty, as llama.cpp's engine adds it to the logits before its sampler chain."""

    def __init__(self, follower: SpanFollower, prompt_len: int):
        self.follower, self.prompt_len = follower, prompt_len

    def __call__(self, input_ids, scores):
        if input_ids.shape[0] != 1:
            raise ModelError("a followed answer span decodes one reply at a time")
        for token, value in self.follower.biases(input_ids[0, self.prompt_len :].tolist()).items():
            scores[0, token] += value
        return scores


def _owns_penalty(options: GenerationOptions, follow: bool) -> bool:
    """Whether the repetition penalty is one of our processors rather than transformers' own:
    when it is kept to the reply, and when a followed span must come before it."""
    return options.repetition_penalty != 1.0 and (not options.penalize_prompt or follow)


def _reading_processors(
    options: GenerationOptions, prompt_len: int, biases: dict[int, float], device, follow: SpanFollower | None = None
):
    """The custom logits processors for `options` (empty for a plain chat), in llama.cpp's
    order: the followed span, the penalty, the biases. transformers runs custom processors
    after its own (the penalty, when it counts the prompt and no span is followed) and before
    its sampling warpers (temperature, top-p)."""
    from transformers.generation.logits_process import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

    processors = LogitsProcessorList()
    if follow is not None:
        processors.append(_FollowSpan(follow, prompt_len))
    if _owns_penalty(options, follow is not None):
        ignore = None if options.penalize_prompt else prompt_len
        processors.append(RepetitionPenaltyLogitsProcessor(options.repetition_penalty, prompt_ignore_length=ignore))
    if biases:
        processors.append(_LogitBias(biases, device))
    return processors


class TorchEngine(ChatEngine):
    backend = "torch"
    parallel = 1

    def __init__(self, model, tokenizer, *, name: str, hardware: Hardware, max_context: int = 2048):
        model_limit = getattr(model.config, "max_position_embeddings", None) or max_context
        super().__init__(tokenizer, name=name, hardware=hardware, context_window=min(max_context, model_limit))
        self.base_model = model
        self.model = model  # becomes a PeftModel once the first adapter is loaded
        self._lock = threading.Lock()

    # ---- loading -----------------------------------------------------------------------
    @classmethod
    def load(cls, resolved: ResolvedModel, hardware: Hardware | None = None, max_context: int = 2048) -> TorchEngine:
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

    # ---- generation --------------------------------------------------------------------
    def _start(self, gen: Generation, messages: list[Message], options: GenerationOptions, adapter: str | None) -> None:
        thread = threading.Thread(
            target=self._run, args=(gen, messages, options, adapter), daemon=True, name="tailor-generate"
        )
        thread.start()

    def _run(self, gen: Generation, messages: list[Message], options: GenerationOptions, adapter: str | None):
        started = time.perf_counter()
        res = gen.result
        streamer = _TextQueueStreamer(self.tokenizer, gen)
        try:
            with self._lock:  # one generation at a time; the adapter choice is shared state
                if gen.stopped:  # stopped while waiting for the lock
                    res.finish_reason = "stopped"
                    return
                ids = self.encode(messages)
                res.prompt_tokens = len(ids)
                input_ids = torch.tensor([ids], device=self.hardware.device)
                sequences = self.focus_sequences(options)
                follow = SpanFollower(sequences, options.focus_bias) if sequences else None
                owned = _owns_penalty(options, follow is not None)
                kwargs = dict(
                    max_new_tokens=options.max_new_tokens,
                    # kept to the reply, or after a followed span, the penalty is one of the
                    # custom processors below instead
                    repetition_penalty=1.0 if owned else options.repetition_penalty,
                    pad_token_id=self.tokenizer.pad_token_id,
                    streamer=streamer,
                    stopping_criteria=[_StopOnEvent(gen._stop)],
                    logits_processor=_reading_processors(
                        options, len(ids), self.logit_biases(options), self.hardware.device, follow
                    ),
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
            res.text = streamer.decoder.text()
            res.completion_tokens = len(streamer.ids)
        finally:
            res.latency_s = time.perf_counter() - started
            if streamer.first_token_at is not None:
                res.ttft_s = streamer.first_token_at - started
            gen._finish()

    def score(self, messages: Sequence[Message], completion: str, adapter: str | None = None) -> tuple[float, int]:
        """Mean cross-entropy (nats/token) of `completion` as the assistant's reply to
        `messages`, under `adapter` (None: the base model), and how many tokens it covers.
        Evaluation uses it for the loss/perplexity of reference answers. The reply's tokens
        include the template's end-of-turn marker: ending on time is part of the answer."""
        self._check_adapter(adapter)
        full, start = self.score_inputs(messages, completion)
        ids = torch.tensor([full], device=self.hardware.device)
        with self._lock, self._use(adapter), torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        # logits at position t predict token t+1: the reply's tokens are predicted from start-1 on
        pred = logits[0, start - 1 : -1].float()
        target = ids[0, start:]
        loss = torch.nn.functional.cross_entropy(pred, target, reduction="mean")
        return float(loss), int(target.numel())

    def span_logprobs(
        self, messages: Sequence[Message], prefix: str, spans: Sequence[str], adapter: str | None = None
    ) -> list[tuple[float, int]]:
        """(total log-probability, token count) of each span as the continuation of the
        assistant's reply to `messages` after `prefix` (e.g. "The answer is "), under `adapter`.
        The prompt is run once and its cache shared by every span, so scoring a handful of
        candidate answers costs about one prompt's prefill plus a few tokens each."""
        self._check_adapter(adapter)
        if not spans:
            return []
        prompt, conts = self.span_inputs(messages, prefix, spans)
        longest = max(len(c) for c in conts)
        device = self.hardware.device
        pad = self.tokenizer.pad_token_id
        batch = torch.tensor([c + [pad] * (longest - len(c)) for c in conts], device=device)
        mask = torch.tensor([[1] * len(prompt) + [1] * len(c) + [0] * (longest - len(c)) for c in conts], device=device)
        with self._lock, self._use(adapter), torch.inference_mode():
            head = self.model(input_ids=torch.tensor([prompt], device=device), use_cache=True)
            cache = head.cache  # transformers 5.x names it `cache` (`past_key_values` is deprecated)
            cache.batch_repeat_interleave(len(conts))
            tail = self.model(input_ids=batch, attention_mask=mask, cache=cache).logits.float()
        first = head.logits[0, -1].float().log_softmax(-1)
        rest = tail.log_softmax(-1)
        out = []
        for i, c in enumerate(conts):
            total = float(first[c[0]]) + sum(float(rest[i, j - 1, c[j]]) for j in range(1, len(c)))
            out.append((total, len(c)))
        return out

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids
