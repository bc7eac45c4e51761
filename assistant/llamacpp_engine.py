"""The llama.cpp backend: the CPU default. One GGUF base model, LoRA adapters in llama.cpp's GGUF
format applied at run time, and every running request decoded together in one batch.

Why: transformers' `generate` in fp32 decoded the 135M default model at 15-16 tokens/s on two
cores and answered one request at a time; llama.cpp on the same weights is several times
faster, and a batch of N sequences costs little more than one (decoding is bound by reading the
weights, which a batch reads once per step for all its sequences).

How it runs:

- One scheduler thread owns the llama.cpp context; nothing else calls into it while it works
  (`_native` lock). Callers that need it between two steps (loading an adapter) go first: the
  scheduler waits while any is waiting (`_between_steps`). Scoring, which runs the model, is
  handed to the scheduler thread itself and runs there between two steps (`_on_scheduler`): every
  llama.cpp computation stays on that thread and its OpenMP workers, where nothing else runs.
  On Intel CPUs with AMX that is what keeps llama.cpp's tile configuration, set once per thread,
  from being released under it by torch's own AMX kernels (assistant/llamacpp_params.py).
- The KV cache has `parallel + 1` streams of `context_window` positions each (`kv_unified`
  off: no sequence starves another). Each request decodes in one stream with its own sampler
  chain (penalties, temperature, top-p, seed) and its own stop flag; requests beyond
  `parallel` wait in arrival order. The spare stream means scoring (the answer choice, the
  reference loss: assistant/llamacpp_scoring.py) always finds one free.
- A stream keeps what it decoded after its request ends. A new request (or scoring) takes the
  free stream whose cache shares at least half of its prompt from the start, under the same
  adapter, and decodes only the rest; otherwise the least recently used stream. So a reply
  reads only what its answer hint and question add after the sources its answer choice just
  read, a reference loss only the reference after its reply, and a chat's next turn only the
  new message after the last turn (`GenerationResult.cached_tokens` counts the reused tokens).
- A step decodes, for each adapter in use, one batch: the next token of every sequence that
  is generating, plus prompt chunks of newly admitted ones (prefill and decode share the
  batch). While a reply someone watches is generating (anything but an evaluation's
  `background` replies), a step reads at most `prefill_chunk` prompt tokens
  (TAILOR_PREFILL_CHUNK), first come first served: a long prompt then holds the replies
  already running for one short chunk per token instead of a whole `n_batch` of prompt
  (Sarathi-Serve's chunked prefill); scoring, which runs between two steps, reads its
  prompt in the same chunks and lets the running replies step between them
  (`_between_chunks`). Otherwise prompts are read `n_batch` tokens a step: a
  burst of short prompts gains nothing from being cut finer, and an evaluation's batch of
  answers ends about 8% sooner in whole batches (benchmarks/prefill_chunk.py,
  benchmarks/batch_invariance.py). llama.cpp applies adapters per context, not per sequence,
  so requests for different adapters are grouped: one decode call per adapter per step,
  switching adapters in between (`llama_set_adapters_lora` only swaps pointers).
- Prompts are the Hugging Face tokenizer's ids (assistant/engine.py), so the prompt, the
  context budget and the token counts are the same as on the torch backend.
- Attention is plain unless `flash_attention` (TAILOR_FLASH_ATTENTION): how a prompt is cut
  into batches then no longer changes its logits, as llama.cpp's CPU flash attention did (see
  __init__). llama.cpp also multiplies one row with other kernels than several, which moves
  replies under an adapter now and then: a request that asks for `batch_invariant`
  (evaluations) never decodes as a lone row (`_second_row`; README, Engine, "Attention").

Greedy decoding with a repetition penalty matches transformers: llama.cpp's penalty divides
positive and multiplies negative logits of every token seen, like transformers'
RepetitionPenaltyLogitsProcessor, and the prompt's tokens are fed to it as transformers does
(unless `penalize_prompt` is off: then neither backend counts them). The copy bias is a logit-bias
sampler after the penalty, where the torch backend puts its processor."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engine import ChatEngine, ReplyDecoder, SpanFollower, require_safetensors
from .errors import ModelError, ValidationError
from .generation import MIN_SAMPLING_TEMPERATURE, Generation, GenerationOptions, Message
from .hardware import Hardware
from .llamacpp_params import model_params, route_llama_log
from .llamacpp_scoring import LlamaCppScorer

log = logging.getLogger(__name__)

DEFAULT_PARALLEL = 8  # sequences decoded together; (8 + 1) x 2048 tokens of KV cache is ~430 MB for 135M
N_BATCH = 512  # tokens per decode call (prompt chunks and next tokens together)
# Prompt tokens per step while a watched reply is generating (see the module docstring): the
# longest wait between two of its tokens is then about one such chunk's time.
PREFILL_CHUNK = 128


def _runs(streams: set[int]) -> int:
    """How many runs of consecutive numbers `streams` makes: the passes of the model one
    decoding step over them costs (see `_decode_group`)."""
    return sum(1 for s in streams if s - 1 not in streams)


@dataclass
class _Request:
    gen: Generation
    ids: list[int]
    options: GenerationOptions
    adapter: str | None
    started: float


@dataclass
class _Job:
    """Work a caller hands to the scheduler thread (`_on_scheduler`), and its outcome."""

    work: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


@dataclass
class _Sequence:
    seq_id: int
    request: _Request
    lora: object | None  # the llama.cpp adapter pointer it decodes with (fixed for its life)
    lora_key: int  # that adapter's load number (0: the base), what its cache was made under
    sampler: object
    decoder: ReplyDecoder
    pending: list[int]  # prompt tokens not yet decoded
    pos: int = 0  # next position in this sequence's KV cache
    last: int | None = None  # the token sampled last, decoded in the next step
    first_token_at: float | None = None
    new_ids: list[int] = field(default_factory=list)
    follow: SpanFollower | None = None  # a followed answer span (GenerationOptions.focus_follow)


class LlamaCppEngine(ChatEngine):
    backend = "llamacpp"

    def __init__(
        self,
        gguf: Path,
        tokenizer,
        *,
        name: str,
        base_folder: Path,
        eos_ids: set[int],
        max_context: int = 2048,
        threads: int | None = None,
        parallel: int = DEFAULT_PARALLEL,
        top_k: int = 50,
        exact: bool = False,
        flash_attention: bool = False,
        prefill_chunk: int = PREFILL_CHUNK,
    ):
        import llama_cpp
        from llama_cpp import _logger

        # llama.cpp logs every load step and a line per adapter switch to stderr; keep errors only.
        _logger.set_verbose(False)
        self._ll = llama_cpp
        self.gguf = Path(gguf)
        self.base_folder = Path(base_folder)  # the Hugging Face folder: tokenizer, LoRA conversion
        self.parallel = max(1, int(parallel))
        self.top_k = top_k  # sampling keeps the k likeliest tokens first, as transformers' generate does
        self.threads = max(1, threads or os.cpu_count() or 1)
        # 0 (or less) turns the chunking off: prompts are read in whole batches, as before
        self.prefill_chunk = N_BATCH if int(prefill_chunk) <= 0 else min(N_BATCH, int(prefill_chunk))
        llama_cpp.llama_backend_init()
        route_llama_log(llama_cpp)
        mparams = model_params(llama_cpp, self.gguf)  # AMX buffers only where the probe passed
        self._model = llama_cpp.llama_model_load_from_file(str(self.gguf).encode(), mparams)
        if not self._model:
            raise ModelError(f"llama.cpp could not load {self.gguf} (see the log above for its reason)")
        train_ctx = llama_cpp.llama_model_n_ctx_train(self._model) or max_context
        super().__init__(
            tokenizer, name=name, hardware=Hardware("cpu", _float32()), context_window=min(max_context, train_ctx)
        )
        # One stream more than requests decode at once: scoring (answer choice, reference loss)
        # always finds a stream no request is using, and leaves its prompt there for the reply.
        self.streams = self.parallel + 1
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.context_window * self.streams
        cparams.n_seq_max = self.streams
        cparams.kv_unified = False  # each sequence owns context_window positions: no sequence starves another
        cparams.n_batch = cparams.n_ubatch = N_BATCH
        cparams.n_threads = cparams.n_threads_batch = self.threads
        cparams.no_perf = True
        # Plain attention unless asked (TAILOR_FLASH_ATTENTION): llama.cpp's CPU flash attention
        # picks one of three kernels by how many of a sequence's tokens a micro-batch holds (under
        # 64, every next token included, with f16 sums; 64 or more tiled in f32; a next token
        # after 512+ cached ones split between the threads), so the same prompt
        # gave other logits, and often another greedy reply, depending on how the scheduler cut
        # it and what it shared a batch with. Plain attention gives the same logits however the
        # prompt is cut. Measured in benchmarks/batch_invariance.py (README, Engine).
        self.flash_attention = bool(flash_attention) and not exact
        cparams.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO if self.flash_attention else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        if exact:  # an f32 cache and plain attention: scores match torch's fp32 to ~1e-5 (tests)
            cparams.type_k = cparams.type_v = llama_cpp.GGML_TYPE_F32
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise ModelError(f"llama.cpp could not create a context for {self.gguf} ({cparams.n_ctx} tokens)")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._eos = set(eos_ids)
        self._batch = llama_cpp.llama_batch_init(N_BATCH, 0, 1)
        self._loras: dict[str, tuple[object, int]] = {}  # adapter name -> (llama.cpp pointer, load number)
        self._loads = 0  # adapters loaded so far: a cache made under one load is never reused under another
        # What each stream's cache holds (adapter load number, 0 for the base; token ids from
        # position 0) and when it was last used: a request starts where its prompt stops matching.
        self._held: dict[int, tuple[int, list[int]]] = {}
        self._used_at: dict[int, float] = {}
        self._retired: list[object] = []  # replaced adapters, freed once no sequence uses them
        self._current_lora: object | None = None  # the adapter set on the context now
        self._scoring: tuple[int, object | None] | None = None  # (stream, adapter) of the scoring in progress
        self._scorer = LlamaCppScorer(
            llama_cpp,
            self._ctx,
            self._batch,
            n_batch=N_BATCH,
            n_vocab=self._n_vocab,
            chunk=self._prompt_budget,
            between=self._between_chunks,
        )
        self._native = threading.Lock()  # held while llama.cpp works on the context
        self._wake = threading.Condition()
        # Callers waiting for the context between two steps (scoring, adapter loads). The
        # scheduler lets them in first: a lock is not fair, and the scheduler takes it back at
        # once, so a caller would otherwise wait until every running reply had ended.
        self._callers = 0
        self._waiting: collections.deque[_Request] = collections.deque()
        self._jobs: collections.deque[_Job] = collections.deque()  # scoring, run between two steps
        self._running: dict[int, _Sequence] = {}
        self._closing = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name="tailor-llamacpp")
        self._thread.start()

    def describe(self) -> str:
        attention = "flash attention" if self.flash_attention else "plain attention"
        return (
            f"llamacpp ({self.gguf.name}), cpu, {self.threads} threads, {self.parallel} requests per batch, "
            f"{attention}, prompts read {self.prefill_chunk} tokens a step beside running replies"
        )

    @contextlib.contextmanager
    def _between_steps(self):
        """Hold the context between two decoding steps, before the scheduler's next one."""
        with self._wake:
            self._callers += 1
        try:
            with self._native:
                yield
        finally:
            with self._wake:
                self._callers -= 1
                self._wake.notify_all()

    # ---- the streams' caches ---------------------------------------------------------------
    def _lora(self, adapter: str | None) -> tuple[object | None, int]:
        """`adapter`'s llama.cpp pointer and load number ((None, 0) for the base)."""
        if adapter is None:
            return None, 0
        if adapter not in self._loras:
            raise ValidationError(f"adapter {adapter!r} was unloaded")
        return self._loras[adapter]

    def _take_stream(self, key: int, ids: Sequence[int], free: Sequence[int], limit: int) -> tuple[int, int]:
        """A stream for `ids` among the `free` ones, emptied after the start it shares with
        `ids` (cut to at most `limit` tokens: the first position whose logits are wanted must be
        decoded). Returns (stream, tokens reused).

        The stream whose cache shares the longest start with `ids` under the same adapter load
        `key`, when that covers at least half of `ids` (a chat's next turn, a reply after its
        answer choice); otherwise one that keeps the running streams' numbers contiguous (see
        `_decode_group`), the least recently used among those. Every prompt shares the chat
        template's first tokens with every other, so taking the longest match always would
        spend a cache that another request is about to reuse on a few dozen tokens (as
        llama.cpp's own server, which also picks by a similarity threshold)."""

        def shared(seq: int) -> int:
            held_key, held = self._held.get(seq, (-1, []))
            if held_key != key:
                return 0
            n = 0
            for a, b in zip(held, ids):
                if a != b:
                    break
                n += 1
            return n

        seq = max(free, key=lambda s: (shared(s), -self._used_at.get(s, 0.0)))
        if 2 * shared(seq) < len(ids):
            running = set(self._running)
            seq = min(free, key=lambda s: (_runs(running | {s}), self._used_at.get(s, 0.0)))
        reuse = max(0, min(shared(seq), limit))
        if not self._ll.llama_memory_seq_rm(self._mem, seq, reuse, -1):
            # a cache that cannot drop a tail (recurrent or sliding-window models): start afresh
            self._ll.llama_memory_seq_rm(self._mem, seq, -1, -1)
            reuse = 0
        self._held[seq] = (key, list(ids[:reuse]))
        self._used_at[seq] = time.perf_counter()
        return seq, reuse

    def forget_prompts(self) -> None:
        """Empty every stream no request is using (benchmarks compare cold prompts this way)."""
        with self._between_steps():
            for seq in range(self.streams):
                if seq not in self._running:
                    self._forget(seq)

    def _forget(self, seq: int) -> None:
        """Empty a stream whose cache is in doubt (a failed decode)."""
        self._ll.llama_memory_seq_rm(self._mem, seq, -1, -1)
        self._held.pop(seq, None)

    def _use_lora(self, lora: object | None) -> None:
        if lora is self._current_lora:
            return
        ll = self._ll
        if lora is None:
            ll.llama_set_adapters_lora(self._ctx, None, 0, None)
        else:
            ll.llama_set_adapters_lora(
                self._ctx, (ll.llama_adapter_lora_p_ctypes * 1)(lora), 1, (ctypes.c_float * 1)(1.0)
            )
        self._current_lora = lora

    # ---- adapters ----------------------------------------------------------------------
    def load_adapter(self, name: str, path: Path, version: str | None = None) -> None:
        from .gguf_lora import ensure_lora_gguf

        path = Path(path)
        version = version or str(path)
        require_safetensors(path, "adapter")
        if self._adapters.get(name) == version:
            return
        try:
            lora_file = ensure_lora_gguf(path, self.base_folder)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"Could not convert adapter {name!r} in {path} to llama.cpp's format: {exc}") from exc
        with self._between_steps():
            if self._adapters.get(name) == version:  # another request loaded it meanwhile
                return
            lora = self._ll.llama_adapter_lora_init(self._model, str(lora_file).encode())
            if not lora:
                raise ModelError(f"llama.cpp could not load adapter {name!r} from {lora_file}")
            old = self._loras.get(name)
            if old is not None:
                self._retired.append(old[0])
            self._loads += 1
            self._loras[name] = (lora, self._loads)
            self._adapters[name] = version

    def unload_adapter(self, name: str) -> None:
        with self._between_steps():
            old = self._loras.pop(name, None)
            if old is not None:
                self._retired.append(old[0])
            self._adapters.pop(name, None)

    # ---- generation --------------------------------------------------------------------
    def _start(self, gen: Generation, messages: list[Message], options: GenerationOptions, adapter: str | None) -> None:
        ids = self.encode(messages)
        gen.result.prompt_tokens = len(ids)
        with self._wake:
            if self._closing:
                raise ModelError("the engine is shut down")
            self._waiting.append(_Request(gen, ids, options, adapter, time.perf_counter()))
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._closing and (
                    self._callers or (not self._waiting and not self._running and not self._jobs)
                ):
                    self._wake.wait()
                if self._closing:
                    break
            try:
                with self._native:
                    self._run_jobs()
                    self._admit()
                    self._step()
                    self._free_retired()
            except Exception as exc:  # noqa: BLE001  never let the scheduler die: fail what was running (logged)
                self._fail_running(exc)
        with self._native:
            with self._wake:
                jobs, self._jobs = list(self._jobs), collections.deque()
            for job in jobs:
                job.error = ModelError("the engine is shut down")
                job.done.set()
            for seq in list(self._running.values()):
                self._end(seq, "error", "the engine was shut down")
            while self._waiting:
                self._reject(self._waiting.popleft(), "error", "the engine was shut down")

    def _on_scheduler(self, work: Callable[[], Any]) -> Any:
        """Run `work` on the scheduler thread between two steps, holding the context, and return
        its result (or raise its exception) here."""
        if threading.current_thread() is self._thread:  # already there, holding the context
            return work()
        job = _Job(work)
        with self._wake:
            if self._closing:
                raise ModelError("the engine is shut down")
            self._jobs.append(job)
            self._wake.notify_all()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _run_jobs(self) -> None:
        while True:
            with self._wake:
                if not self._jobs:
                    return
                job = self._jobs.popleft()
            try:
                job.result = job.work()
            except Exception as exc:  # noqa: BLE001  (raised again in the caller's thread)
                job.error = exc
            finally:
                job.done.set()

    def _admit(self) -> None:
        while len(self._running) < self.parallel:
            with self._wake:
                if not self._waiting:
                    return
                request = self._waiting.popleft()
            if request.gen.stopped:  # stopped while it waited: nothing to decode
                self._reject(request, "stopped")
                continue
            try:
                lora, key = self._lora(request.adapter)
            except ValidationError as exc:
                self._reject(request, "error", str(exc))
                continue
            free = [i for i in range(self.streams) if i not in self._running]
            # the last prompt token is always decoded: its logits give the first reply token
            seq_id, reused = self._take_stream(key, request.ids, free, len(request.ids) - 1)
            request.gen.result.cached_tokens = reused
            sampler = self._sampler(request.options)
            if request.options.penalize_prompt:  # the penalty counts the prompt's tokens, as transformers does
                for token in request.ids:
                    self._ll.llama_sampler_accept(sampler, token)
            sequences = self.focus_sequences(request.options)
            self._running[seq_id] = _Sequence(
                seq_id,
                request,
                lora,
                key,
                sampler,
                ReplyDecoder(self.tokenizer),
                pending=list(request.ids[reused:]),
                pos=reused,
                follow=SpanFollower(sequences, request.options.focus_bias) if sequences else None,
            )

    def _sampler(self, options: GenerationOptions):
        ll = self._ll
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        if options.repetition_penalty != 1.0:
            ll.llama_sampler_chain_add(
                chain,
                ll.llama_sampler_init_penalties(
                    self._n_vocab, self.context_window, options.repetition_penalty, 0.0, 0.0
                ),
            )
        bias = self.logit_biases(options)
        if bias:  # after the penalty, before temperature and top-p: the torch backend's order
            biases = (ll.llama_logit_bias * len(bias))(*bias.items())
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_logit_bias(self._n_vocab, len(bias), biases))
        # Below ~0.01 sampling is greedy in all but name (see the torch backend): decode greedily.
        if options.temperature >= MIN_SAMPLING_TEMPERATURE:
            if self.top_k > 0:  # also makes top-p cheap: it sorts k candidates, not the vocabulary
                ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_k(self.top_k))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(options.temperature))
            if options.top_p < 1.0:
                ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(options.top_p, 1))
            seed = ll.LLAMA_DEFAULT_SEED if options.seed is None else options.seed % 2**32
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(seed))
        else:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
        return chain

    def _step(self) -> None:
        for seq in [s for s in self._running.values() if s.request.gen.stopped]:
            self._end(seq, "stopped")
        groups: dict[int, list[_Sequence]] = collections.defaultdict(list)
        for seq in self._running.values():
            groups[id(seq.lora)].append(seq)
        budget = self._prompt_budget()
        for seqs in groups.values():
            # Next tokens first (each request's next visible token), then prompt chunks in
            # arrival order; a long prompt is decoded over several steps.
            self._decode_group(seqs, budget)

    def _prompt_budget(self) -> int:
        """Prompt tokens a step (or a scoring chunk) may read: `prefill_chunk` while a watched
        reply is generating (module docstring); beside none, or only evaluations' (`background`),
        a whole batch."""
        watched = any(not s.pending and not s.request.options.background for s in self._running.values())
        return self.prefill_chunk if watched else N_BATCH

    def _between_chunks(self) -> None:
        """Between two chunks of a prompt being scored (on the scheduler thread, in a job): one
        step for the running replies when a watched one is generating, so scoring a long prompt
        holds them for one chunk at a time, as a new request's prompt does. New requests still
        wait for the job. The scoring's adapter is set again afterwards."""
        if self._scoring is None or self._prompt_budget() == N_BATCH:
            return
        try:
            self._step()
        except Exception as exc:  # noqa: BLE001  as in _loop: the running replies fail (logged), the scoring goes on
            self._fail_running(exc)
        self._use_lora(self._scoring[1])

    def _fail_running(self, exc: Exception) -> None:
        """A step raised (in `_loop` or between scoring chunks): log it and fail every running reply."""
        log.exception("llama.cpp step failed")
        for seq in list(self._running.values()):
            self._end(seq, "error", f"{exc.__class__.__name__}: {exc}")

    def _decode_group(self, seqs: list[_Sequence], budget: int) -> None:
        """Decode one batch for sequences sharing an adapter: every next token, and at most
        `budget` prompt tokens, first to the earliest admitted; the other prompts wait."""
        ll, batch = self._ll, self._batch
        n = 0
        outputs: list[tuple[int, _Sequence]] = []  # (batch index, sequence) whose logits we sample

        def add(token: int, seq: _Sequence, logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = seq.pos
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq.seq_id
            batch.logits[n] = logits
            if logits:
                outputs.append((n, seq))
            seq.pos += 1
            n += 1

        # Room first for every next token, then prompt chunks in what is left; but the batch is
        # written in stream order, each sequence's tokens together. With a cache per stream
        # (kv_unified off) llama.cpp splits a batch into ubatches of consecutive stream numbers,
        # in the order they first appear (llama_batch_allocr::split_equal, sequential), and runs
        # the model once per ubatch: 8 next tokens of streams 8, 0..6 cost two passes, 40 % more
        # time per step on 2 cores than streams 0..7 in order.
        room = min(budget, N_BATCH - sum(1 for seq in seqs if not seq.pending and seq.last is not None))
        chunks: dict[int, list[int]] = {}
        for seq in seqs:
            if not seq.pending or room <= 0:
                continue
            chunks[seq.seq_id], seq.pending = seq.pending[:room], seq.pending[room:]
            room -= len(chunks[seq.seq_id])
        for seq in sorted(seqs, key=lambda s: s.seq_id):
            chunk = chunks.get(seq.seq_id)
            if chunk is not None:
                for i, token in enumerate(chunk):
                    add(token, seq, not seq.pending and i == len(chunk) - 1)
            elif not seq.pending and seq.last is not None:
                add(seq.last, seq, True)
        if n == 0:
            return
        spare = self._second_row(n, seqs)
        if spare is not None:  # a throw-away row in the next stream, dropped again after the decode
            stream, pos = spare
            batch.token[n], batch.pos[n], batch.n_seq_id[n], batch.logits[n] = batch.token[0], pos, 1, False
            batch.seq_id[n][0] = stream
            n += 1
        batch.n_tokens = n
        self._use_lora(seqs[0].lora)
        rc = ll.llama_decode(self._ctx, batch)
        if spare is not None:
            ll.llama_memory_seq_rm(self._mem, spare[0], spare[1], -1)
        if rc != 0:
            reason = "no room left in the KV cache" if rc == 1 else f"llama_decode returned {rc}"
            for seq in {id(s): s for s in seqs}.values():
                if seq.seq_id in self._running:
                    self._end(seq, "error", reason)
            return
        for index, seq in outputs:
            self._sample(seq, index)

    def _second_row(self, n: int, seqs: list[_Sequence]) -> tuple[int, int] | None:
        """(stream, position) for a throw-away second row when this batch holds one token and a
        request in it asked for `batch_invariant`; None otherwise. llama.cpp multiplies a single
        row with its own dot products and several with llamafile's sgemm, whose sums round
        differently: measured, the same reply under an adapter decoded alone and beside other
        requests parted after a few dozen tokens, and with this row it did not. The row goes
        to a stream next to the request's (llama.cpp runs one pass per run of consecutive
        streams) that no request is using, at the end of what that stream holds, so its cache
        is kept."""
        if n != 1 or not any(s.request.options.batch_invariant for s in seqs):
            return None
        lone = self._batch.seq_id[0][0]
        scoring = self._scoring[0] if self._scoring is not None else None
        for stream in (lone + 1, lone - 1):
            if 0 <= stream < self.streams and stream not in self._running and stream != scoring:
                pos = self._ll.llama_memory_seq_pos_max(self._mem, stream) + 1  # -1 when empty
                if pos < self.context_window:
                    return stream, pos
        return None

    def _sample(self, seq: _Sequence, index: int) -> None:
        if seq.follow is not None:  # into the logits the chain reads, so before its penalty (as torch)
            bias = seq.follow.biases(seq.new_ids)
            if bias:
                logits = self._ll.llama_get_logits_ith(self._ctx, index)
                for t, value in bias.items():
                    logits[t] += value
        token = self._ll.llama_sampler_sample(seq.sampler, self._ctx, index)  # also accepts the token
        if seq.first_token_at is None:
            seq.first_token_at = time.perf_counter()
        options = seq.request.options
        if token in self._eos or self._ll.llama_vocab_is_eog(self._vocab, token):
            seq.new_ids.append(token)
            self._end(seq, "stop")
            return
        seq.new_ids.append(token)
        seq.last = token
        text = seq.decoder.add(token)
        if text is not None:
            seq.request.gen._push(text)
        if len(seq.new_ids) >= options.max_new_tokens or seq.pos >= self.context_window:
            self._end(seq, "length")

    def _end(self, seq: _Sequence, reason: str, error: str | None = None) -> None:
        self._running.pop(seq.seq_id, None)
        if error:
            self._forget(seq.seq_id)
        else:  # its cache stays for the next request that starts alike (the next turn of a chat)
            self._held[seq.seq_id] = (seq.lora_key, (seq.request.ids + seq.new_ids)[: seq.pos])
            self._used_at[seq.seq_id] = time.perf_counter()
        self._ll.llama_sampler_free(seq.sampler)
        res = seq.request.gen.result
        res.completion_tokens = len(seq.new_ids)
        res.text = seq.decoder.text()
        res.finish_reason = reason
        res.error = error
        if error:
            log.warning("generation failed: %s", error)
        now = time.perf_counter()
        res.latency_s = now - seq.request.started
        if seq.first_token_at is not None:
            res.ttft_s = seq.first_token_at - seq.request.started
        seq.request.gen._finish()

    def _reject(self, request: _Request, reason: str, error: str | None = None) -> None:
        res = request.gen.result
        res.finish_reason, res.error = reason, error
        res.latency_s = time.perf_counter() - request.started
        request.gen._finish()

    def _free_retired(self) -> None:
        in_use = {id(s.lora) for s in self._running.values()}
        keep = []
        for lora in self._retired:
            if id(lora) in in_use:
                keep.append(lora)
            else:
                if lora is self._current_lora:  # never leave a freed adapter set on the context
                    self._ll.llama_set_adapters_lora(self._ctx, None, 0, None)
                    self._current_lora = None
                self._ll.llama_adapter_lora_free(lora)
        self._retired = keep

    # ---- scoring given text (answer choice, reference loss) -------------------------------
    def span_logprobs(
        self, messages: Sequence[Message], prefix: str, spans: Sequence[str], adapter: str | None = None
    ) -> list[tuple[float, int]]:
        """As the torch backend's (assistant/engine.py), on this engine's weights, between two
        decoding steps, in a free stream whose cache the reply can then start from
        (assistant/llamacpp_scoring.py)."""
        self._check_adapter(adapter)
        if not spans:
            return []
        prompt, conts = self.span_inputs(messages, prefix, spans)

        def work() -> list[tuple[float, int]]:
            with self._scoring_stream(adapter, prompt, len(prompt) - 1) as (seq, reused):
                return self._scorer.span_logprobs(seq, prompt, reused, conts)

        return self._on_scheduler(work)

    def score(self, messages: Sequence[Message], completion: str, adapter: str | None = None) -> tuple[float, int]:
        self._check_adapter(adapter)
        ids, reply_start = self.score_inputs(messages, completion)

        def work() -> tuple[float, int]:
            with self._scoring_stream(adapter, ids, reply_start - 1) as (seq, reused):
                return self._scorer.loss(seq, ids, reused, reply_start)

        return self._on_scheduler(work)

    @contextlib.contextmanager
    def _scoring_stream(self, adapter: str | None, ids: list[int], limit: int) -> Iterator[tuple[int, int]]:
        """A free stream for scoring `ids` under `adapter`, on the scheduler thread between two
        steps (`_on_scheduler`): (stream, tokens of `ids` its cache already holds, at most
        `limit`). Afterwards the stream's cache holds `ids` for the reply or turn that follows;
        if scoring failed, nothing."""
        lora, key = self._lora(adapter)
        free = [i for i in range(self.streams) if i not in self._running]
        seq, reused = self._take_stream(key, ids, free, limit)
        self._use_lora(lora)
        self._scoring = (seq, lora)  # replies may step between its chunks (`_between_chunks`)
        try:
            yield seq, reused
        except Exception:
            self._forget(seq)
            raise
        finally:
            self._scoring = None
        self._held[seq] = (key, list(ids))

    def close(self) -> None:
        with self._wake:
            if self._closing:
                return
            self._closing = True
            self._wake.notify_all()
        self._thread.join(timeout=30)
        with self._native:
            for lora in [pointer for pointer, _ in self._loras.values()] + self._retired:
                self._ll.llama_adapter_lora_free(lora)
            self._loras.clear()
            self._retired = []
            self._ll.llama_batch_free(self._batch)
            self._ll.llama_free(self._ctx)
            self._ll.llama_model_free(self._model)


def _float32():
    import torch

    return torch.float32
