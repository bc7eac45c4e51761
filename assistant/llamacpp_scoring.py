"""Scoring given text on llama.cpp: the log-probability of candidate answer spans
(assistant/answer_choice.py) and the reference loss of an evaluation, on the engine's own GGUF
weights and adapters, in the engine's own context.

Why: these used to run on a second copy of the model in torch (fp32), loaded on the first
retrieval reply. That copy cost the chat server ~0.5 GB and a load of several seconds, and
every retrieval reply read its prompt two or three times: in torch to choose the answer (and
in an evaluation again for the reference loss), then in llama.cpp to write the reply. Here the
scoring reads the prompt into one of the engine's KV-cache streams, where the reply that
follows reuses it (assistant/llamacpp_engine.py keeps what each stream holds and starts a
request where its prompt stops matching): the reply decodes only what the answer hint and the
question add after the sources, and the reference loss only the reference.

How the candidates share the prompt: each stream of the engine's context is its own cache
(`kv_unified` off), so candidates cannot fork into other streams; they are decoded one after
another after the prompt in the same stream, each removed again (`llama_memory_seq_rm`) before
the next. A candidate is a few tokens, so this costs about a decoding step each.

Scores follow the torch backend's definitions (assistant/torch_engine.py). For the default
model both start from the same Q4_1 weights (llama.cpp runs them re-encoded as q8_0, see
assistant/backends.py), so they differ by that rounding and by llama.cpp's arithmetic: its
matrix products round activations to 8 bits, and its cache is f16 (on the tests' f32 model with sharp
random weights, up to 0.008 nats per token). With an f32 cache and plain attention
(`LlamaCppEngine(exact=True)`) the two agree to ~1e-5, which the tests check."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .errors import ModelError

WHOLE_ROW = -1  # a target asking for the whole next-token distribution (see LlamaCppScorer._decode)


class LlamaCppScorer:
    """Log-probabilities of given tokens in one stream of a llama.cpp context. Not thread-safe:
    the engine calls it under its lock, with the stream's adapter already set."""

    def __init__(
        self,
        ll,
        ctx,
        batch,
        *,
        n_batch: int,
        n_vocab: int,
        chunk: Callable[[], int] | None = None,
        between: Callable[[], None] | None = None,
    ):
        self._ll, self._ctx, self._batch = ll, ctx, batch
        self._mem = ll.llama_get_memory(ctx)
        self.n_batch = n_batch
        self._n_vocab = n_vocab
        self.last_row = np.zeros(0)  # the distribution a WHOLE_ROW target asked for
        # A prompt is read `chunk()` tokens at a time, and `between()` runs after each chunk but
        # the last: the engine decodes its running replies' next tokens there, so a long prompt
        # being scored holds them for one chunk at a time (assistant/llamacpp_engine.py).
        self._chunk = chunk or (lambda: n_batch)
        self._between = between or (lambda: None)

    def _decode(self, seq: int, tokens: Sequence[tuple[int, int, int | None]]) -> list[float]:
        """Decode (token, position, target) in stream `seq` in one batch; for each entry with
        a target, in order, the log-probability of that target token next (WHOLE_ROW keeps the
        whole distribution in `last_row` and gives 0.0)."""
        ll, batch = self._ll, self._batch
        for i, (token, pos, target) in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = target is not None
        batch.n_tokens = len(tokens)
        rc = ll.llama_decode(self._ctx, batch)
        if rc != 0:
            raise ModelError(f"llama.cpp could not score the text (llama_decode returned {rc})")
        out = []
        for i, (_, _, target) in enumerate(tokens):
            if target is None:
                continue
            row = np.ctypeslib.as_array(ll.llama_get_logits_ith(self._ctx, i), shape=(self._n_vocab,))
            row = row.astype(np.float64)
            top = row.max()
            logprobs = row - (top + np.log(np.exp(row - top).sum()))
            if target == WHOLE_ROW:
                self.last_row = logprobs
                out.append(0.0)
            else:
                out.append(float(logprobs[target]))
        return out

    def prefill(self, seq: int, ids: Sequence[int], start: int, targets: dict[int, int]) -> list[float]:
        """Decode `ids[start:]` into stream `seq` (which holds `ids[:start]` already), in
        batches; the log-probability of `targets[i]` after position i, for each i in
        `targets` (all at or after `start`), in order."""
        out: list[float] = []
        first = start
        while first < len(ids):
            if first > start:
                self._between()  # may decode other streams: this stream's logits were read already
            chunk = ids[first : first + max(1, min(self.n_batch, self._chunk()))]
            out += self._decode(seq, [(t, first + i, targets.get(first + i)) for i, t in enumerate(chunk)])
            first += len(chunk)
        return out

    def span_logprobs(
        self, seq: int, prompt: Sequence[int], start: int, conts: Sequence[Sequence[int]]
    ) -> list[tuple[float, int]]:
        """(total log-probability, token count) of each of `conts` continuing `prompt`, read
        into stream `seq` from `start` on. The stream holds `prompt` afterwards, and nothing
        after it."""
        if not prompt or start >= len(prompt):
            raise ModelError("the prompt to score the answers after must have a token to decode")
        self.prefill(seq, prompt, start, {len(prompt) - 1: WHOLE_ROW})
        first = self.last_row
        p = len(prompt)
        out = []
        for c in conts:
            total = float(first[c[0]])
            if len(c) > 1:
                for begin in range(0, len(c) - 1, self.n_batch):  # a span longer than a batch, in pieces
                    piece = range(begin, min(begin + self.n_batch, len(c) - 1))
                    total += sum(self._decode(seq, [(c[j], p + j, c[j + 1]) for j in piece]))
                if not self._ll.llama_memory_seq_rm(self._mem, seq, p, -1):
                    raise ModelError("this model's cache cannot drop tokens, so answers cannot be scored on llama.cpp")
            out.append((total, len(c)))
        return out

    def loss(self, seq: int, ids: Sequence[int], start: int, reply_start: int) -> tuple[float, int]:
        """Mean cross-entropy (nats/token) of `ids[reply_start:]` after `ids[:reply_start]`, and
        its token count, read into stream `seq` (holding `ids[:start]`) from `start` on."""
        if not 0 < reply_start < len(ids) or start >= reply_start:
            raise ModelError(f"cannot score tokens {reply_start}..{len(ids)} from position {start}")
        targets = {i - 1: ids[i] for i in range(reply_start, len(ids))}
        total = -sum(self.prefill(seq, ids, start, targets))
        return total / (len(ids) - reply_start), len(ids) - reply_start
