"""The llama.cpp backend against the torch backend on the same model: greedy parity with and
without an adapter, hot-swapped adapters, batched requests that keep to themselves, Stop in a
batch, and the fallback to torch. Skipped where llama-cpp-python is not installed (the suite
then runs on torch alone)."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import threading
from dataclasses import replace

import pytest

from assistant.engine import GenerationOptions

# Tests that run llama.cpp skip without it; the fallback tests at the end run either way.
needs_llamacpp = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed"
)

GREEDY = GenerationOptions(temperature=0, max_new_tokens=24, repetition_penalty=1.0)
GREEDY_PENALTY = GenerationOptions(temperature=0, max_new_tokens=24, repetition_penalty=1.3)
PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello there"}],
    [
        {"role": "user", "content": "Pump your tyres?"},
        {"role": "assistant", "content": "Ahoy, rider! Before every ride."},
        {"role": "user", "content": "thanks, and the brakes?"},
    ],
]


@pytest.fixture(scope="module")
def sharp_model_dir(tmp_path_factory):
    """The tiny model with 20x larger random weights. At the usual init its next-token logits are
    nearly flat (top-2 gaps down to 5e-5), so float rounding that differs between two correct
    implementations flips greedy choices; with sharper logits a mismatch means a real bug."""
    from ..conftest import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("sharp-tiny"), initializer_range=0.4)


@pytest.fixture(scope="module")
def sharp_gguf(sharp_model_dir, tmp_path_factory):
    from assistant.gguf_convert import convert_folder_to_gguf

    return convert_folder_to_gguf(
        sharp_model_dir, tmp_path_factory.mktemp("sharp-gguf") / "sharp.f32.gguf", outtype="f32"
    )


@pytest.fixture(scope="module")
def tiny_adapter(sharp_model_dir, random_lora, tmp_path_factory):
    return random_lora(sharp_model_dir, tmp_path_factory.mktemp("adapters") / "pirate", seed=3)


@pytest.fixture(scope="module")
def other_adapter(sharp_model_dir, random_lora, tmp_path_factory):
    return random_lora(
        sharp_model_dir,
        tmp_path_factory.mktemp("adapters") / "other",
        seed=11,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )


@pytest.fixture(scope="module")
def engines(sharp_model_dir, sharp_gguf, tiny_adapter, other_adapter):
    from assistant.backends import load_engine
    from assistant.hardware import pick_hardware
    from assistant.models import ResolvedModel
    from assistant.torch_engine import TorchEngine

    resolved = ResolvedModel("tiny", sharp_model_dir, "folder", sharp_gguf)
    torch_engine = TorchEngine.load(resolved, pick_hardware("cpu"), max_context=512)
    llama = load_engine(resolved, pick_hardware("cpu"), backend="llamacpp", max_context=512, parallel=4)
    assert llama.backend == "llamacpp"
    for engine in (torch_engine, llama):
        engine.load_adapter("pirate", tiny_adapter)
        engine.load_adapter("other", other_adapter)
    yield torch_engine, llama
    llama.close()


@needs_llamacpp
@pytest.mark.parametrize("adapter", [None, "pirate", "other"])
@pytest.mark.parametrize("options", [GREEDY, GREEDY_PENALTY], ids=["greedy", "penalty"])
def test_greedy_parity_with_torch(engines, adapter, options):
    torch_engine, llama = engines
    for messages in PROMPTS:
        expected = torch_engine.generate(messages, options, adapter=adapter)
        got = llama.generate(messages, options, adapter=adapter)
        assert got.text == expected.text, (adapter, messages)
        assert got.prompt_tokens == expected.prompt_tokens
        assert got.completion_tokens == expected.completion_tokens
        assert got.finish_reason == expected.finish_reason


# Answering from sources: the penalty kept to the reply's tokens and a bias towards the sources'.
SOURCE = "The deposit is 45 euros, paid by card at the counter; brakes are checked for free."
# 16 tokens: the bias makes near-ties (a top-2 gap of 2.5e-4 at token 22 of the first prompt)
# where float rounding, not a bug, decides; the first 16 are clear of them.
READING = GenerationOptions(
    temperature=0, max_new_tokens=16, repetition_penalty=1.3, copy_bias=3.0, copy_source=SOURCE, penalize_prompt=False
)

PLAIN_16 = GenerationOptions(temperature=0, max_new_tokens=16, repetition_penalty=1.3)
# ... and with an answer span chosen from them (assistant/answer_choice.py) favoured more
FOCUSED = replace(READING, focus_bias=5.0, focus_text="45 euros")
# ... followed token by token, and with the penalty counting the prompt (torch then moves its
# penalty after the followed span, where llama.cpp has it)
FOLLOWED = replace(FOCUSED, focus_bias=8.0, focus_follow=True)
FOLLOWED_PROMPT_PENALTY = replace(FOLLOWED, penalize_prompt=True)


@needs_llamacpp
@pytest.mark.parametrize("adapter", [None, "pirate"])
def test_reading_options_match_torch_and_change_the_reply(engines, adapter):
    torch_engine, llama = engines
    source_ids = set(torch_engine.copy_ids(READING))
    assert source_ids and not source_ids & set(torch_engine.tokenizer.all_special_ids)
    copied = {"plain": 0, "reading": 0}
    for messages in PROMPTS:
        expected = torch_engine.generate(messages, READING, adapter=adapter)
        got = llama.generate(messages, READING, adapter=adapter)
        assert got.text == expected.text, (adapter, messages)
        assert got.completion_tokens == expected.completion_tokens
        focused = torch_engine.generate(messages, FOCUSED, adapter=adapter)
        assert llama.generate(messages, FOCUSED, adapter=adapter).text == focused.text, (adapter, messages)
        for options in (FOLLOWED, FOLLOWED_PROMPT_PENALTY):
            followed = torch_engine.generate(messages, options, adapter=adapter)
            assert llama.generate(messages, options, adapter=adapter).text == followed.text, (adapter, messages)
            assert followed.text.lstrip().startswith("45"), followed.text  # steered into the span at once
        plain = torch_engine.generate(messages, PLAIN_16, adapter=adapter)
        for key, res in (("plain", plain), ("reading", got)):
            ids = torch_engine.tokenizer(res.text, add_special_tokens=False)["input_ids"]
            copied[key] += sum(i in source_ids for i in ids)
    # the bias is felt: replies use more of the sources' tokens than the same prompts without it
    assert copied["reading"] > copied["plain"], copied


def test_reading_options_are_validated_and_recorded():
    from assistant.errors import ValidationError

    with pytest.raises(ValidationError, match="copy_bias"):
        GenerationOptions(copy_bias=11).validate(2048)
    recorded = READING.as_dict()
    assert recorded["copy_bias"] == 3.0 and recorded["penalize_prompt"] is False
    assert "copy_source" not in recorded  # the sources are stored with the reply already


@needs_llamacpp
def test_adapters_change_the_reply_and_swap_without_reload(engines):
    _, llama = engines
    model = llama._model
    messages = PROMPTS[0]
    replies = {a: llama.generate(messages, GREEDY, adapter=a).text for a in (None, "pirate", "other")}
    assert len(set(replies.values())) == 3, replies  # each adapter really changes the answer
    for adapter in ("other", None, "pirate", None):  # switching back and forth is repeatable
        assert llama.generate(messages, GREEDY, adapter=adapter).text == replies[adapter]
    assert llama._model is model  # the base was never reloaded


@needs_llamacpp
def test_a_batch_answers_each_request_on_its_own(engines):
    """Eight requests at once, mixing adapters, penalties, lengths and a seeded sample: each gets
    the reply it gets alone (no cross-talk between sequences in one batch)."""
    _, llama = engines
    sampled = GenerationOptions(temperature=0.9, top_p=0.95, max_new_tokens=20, seed=5)
    requests = []
    for i in range(8):
        options = [GREEDY, GREEDY_PENALTY, sampled, GenerationOptions(temperature=0, max_new_tokens=7)][i % 4]
        requests.append((PROMPTS[i % 3], options, [None, "pirate", "other"][i % 3]))
    alone = [llama.generate(*r) for r in requests]
    together = llama.generate_many(requests)
    for solo, batched, request in zip(alone, together, requests):
        assert batched.text == solo.text, request
        assert batched.completion_tokens == solo.completion_tokens
        assert batched.adapter == request[2]


def tiny_llamacpp(engines, gguf, model_dir, **options):
    """Another llama.cpp engine on the tests' tiny model, with the fixture engines' tokenizer."""
    from assistant.llamacpp_engine import LlamaCppEngine

    torch_engine, llama = engines
    return LlamaCppEngine(
        gguf, torch_engine.tokenizer, name="tiny", base_folder=model_dir, eos_ids=llama._eos, **options
    )


def record_decodes(llama, monkeypatch) -> list[list[tuple[int, int]]]:
    """From now on, each llama_decode call's (stream, position) rows, in call order."""
    calls: list[list[tuple[int, int]]] = []
    decode = llama._ll.llama_decode

    def recording(ctx, batch):
        calls.append([(batch.seq_id[i][0], batch.pos[i]) for i in range(batch.n_tokens)])
        return decode(ctx, batch)

    monkeypatch.setattr(llama._ll, "llama_decode", recording)
    return calls


# A prompt of 3+ chunks of 16 tokens (the chunk the tests below set)
LONG_QUESTION = [{"role": "user", "content": f"{SOURCE} {SOURCE} {SOURCE} How much is the deposit?"}]


@pytest.fixture(scope="module")
def quantized(engines, sharp_gguf, sharp_model_dir, tmp_path_factory):
    """The sharp model as q8_0 weights, as the default model runs: llama.cpp then rounds each
    token's activations to 8 bits on its own, so a token's logits come out bit for bit alike in
    any batch (f32 weights differ in the last bits between a one-row and a many-row product)."""
    from assistant.gguf_convert import quantize_gguf

    gguf = quantize_gguf(sharp_gguf, tmp_path_factory.mktemp("sharp-q8") / "sharp.q8_0.gguf", "q8_0")
    engine = tiny_llamacpp(engines, gguf, sharp_model_dir, max_context=512)
    yield engine
    engine.close()


@needs_llamacpp
def test_a_reply_does_not_depend_on_how_its_prompt_was_batched(quantized, monkeypatch):
    """With the default (plain) attention a token's logits do not depend on how its prompt was
    cut into batches: the first reply token's logits are bit-for-bit the same read cold (the
    long prompt in one batch of 64+ tokens), with the prompt cached by an earlier score (the
    last token alone) and beside requests that are decoding (split into a first micro-batch of
    one token per sequence and the rest). The reference loss likewise, read cold or after its
    prompt was cached. llama.cpp's flash attention computes 64+ tokens of one sequence with
    another kernel than a few tokens: this test then fails, and on the default model the logits
    moved by up to 0.67, so greedy replies changed with their batch. (No adapter here: under one,
    a lone row still rounds differently from several; see the next test.)"""
    import numpy as np

    llama = quantized
    assert not llama.flash_attention
    messages = [{"role": "user", "content": f"{SOURCE} {SOURCE} How much is the deposit, and how do I pay it?"}]
    target = llama.encode(messages)
    assert len(target) >= 64
    rows: list[np.ndarray] = []
    sample = llama._sample

    def recording(seq, index):
        if seq.request.ids == target and not seq.new_ids:
            row = llama._ll.llama_get_logits_ith(llama._ctx, index)
            rows.append(np.ctypeslib.as_array(row, shape=(llama._n_vocab,)).copy())
        return sample(seq, index)

    monkeypatch.setattr(llama, "_sample", recording)
    one = GenerationOptions(temperature=0, max_new_tokens=1)
    llama.forget_prompts()
    assert llama.generate(messages, one).cached_tokens == 0  # cold: the whole prompt in one batch
    llama.forget_prompts()
    llama.score(messages, "Something else.")  # caches the prompt ...
    assert llama.generate(messages, one).cached_tokens == len(target) - 1  # ... so one token is read
    llama.forget_prompts()
    busy = [llama.stream(PROMPTS[i % 3], GenerationOptions(temperature=0, max_new_tokens=40)) for i in range(3)]
    for gen in busy:
        next(iter(gen))  # decoding: the target's prompt shares its first step with their next tokens
    assert llama.generate(messages, one).cached_tokens == 0
    assert all(g.wait(60).completion_tokens > 0 for g in busy)
    assert len(rows) == 3
    assert np.array_equal(rows[0], rows[1]) and np.array_equal(rows[0], rows[2])

    reply = "Ahoy! The deposit is 45 euros, by card."
    llama.forget_prompts()
    cold = llama.score(messages, reply)
    llama.score(messages, "Something else.")
    assert llama.score(messages, reply) == cold  # read after the cached prompt: bit for bit


@needs_llamacpp
def test_a_long_prompt_is_read_in_chunks_while_replies_run(quantized, monkeypatch):
    """While replies are generating, a step reads at most `prefill_chunk` tokens of a new prompt
    beside their next tokens, so they wait one short chunk per token instead of the whole prompt;
    alone, or beside an evaluation's `background` replies, the prompt is read in one batch. Its
    reply is the same every way (plain attention: the logits do not depend on how the prompt was
    cut)."""
    llama = quantized
    monkeypatch.setattr(llama, "prefill_chunk", 16)
    messages = LONG_QUESTION
    target = llama.encode(messages)
    assert len(target) > 3 * 16
    calls = record_decodes(llama, monkeypatch)
    options = GenerationOptions(temperature=0, max_new_tokens=8, repetition_penalty=1.0)
    llama.forget_prompts()
    alone = llama.generate(messages, options)
    assert len(calls[0]) == len(target)  # nothing else running: one batch

    llama.forget_prompts()
    busy = [llama.stream(PROMPTS[i % 3], GenerationOptions(temperature=0, max_new_tokens=60)) for i in range(3)]
    for gen in busy:
        next(iter(gen))  # all three are generating
    calls.clear()
    beside = llama.generate(messages, options)
    assert all(g.wait(60).completion_tokens > 0 for g in busy)
    stream = next(s for call in calls for s, pos in call if pos == 0)  # the target's: its prompt starts at 0
    chunks = [[pos for s, pos in call if s == stream and pos < len(target)] for call in calls]
    chunks = [c for c in chunks if c]
    assert [p for c in chunks for p in c] == list(range(len(target)))  # read once, in order
    assert len(chunks) >= len(target) // 16 and all(len(c) <= 16 for c in chunks), [len(c) for c in chunks]
    shared = [call for call in calls if any(s == stream and pos < len(target) for s, pos in call)]
    assert sum(1 for call in shared if any(s != stream for s, _ in call)) >= len(chunks) - 1  # beside the replies
    assert beside.text == alone.text

    llama.forget_prompts()  # beside an evaluation's replies, which nobody watches stream: whole batches
    background = GenerationOptions(temperature=0, max_new_tokens=60, background=True)
    busy = [llama.stream(PROMPTS[i % 3], background) for i in range(3)]
    for gen in busy:
        next(iter(gen))
    calls.clear()
    assert llama.generate(messages, options).text == alone.text
    assert all(g.wait(60).completion_tokens > 0 for g in busy)
    assert max(len(call) for call in calls) > len(target)  # the whole prompt beside their next tokens


@needs_llamacpp
def test_scoring_a_long_prompt_lets_running_replies_step_between_its_chunks(quantized, monkeypatch):
    """Scoring (the answer choice, a reference loss) runs between two steps on the scheduler
    thread; while watched replies are generating it reads its prompt `prefill_chunk` tokens at
    a time and lets them decode a token between two chunks, so they are not held for the whole
    prompt. The score is the one it gets alone, bit for bit, and the replies are unharmed."""
    llama = quantized
    monkeypatch.setattr(llama, "prefill_chunk", 16)
    messages = LONG_QUESTION
    reply = "Ahoy! The deposit is 45 euros, by card."
    ids, _ = llama.score_inputs(messages, reply)
    llama.forget_prompts()
    alone = llama.score(messages, reply)
    greedy = GenerationOptions(temperature=0, max_new_tokens=60, repetition_penalty=1.0)
    quiet = [llama.generate(PROMPTS[i % 3], greedy).text for i in range(3)]

    llama.forget_prompts()
    busy = [llama.stream(PROMPTS[i % 3], greedy) for i in range(3)]
    for gen in busy:
        next(iter(gen))  # all three are generating
    calls = record_decodes(llama, monkeypatch)
    assert llama.score(messages, reply) == alone
    assert [g.wait(60).text for g in busy] == quiet
    stream = next(s for call in calls for s, pos in call if pos == 0)  # the scored prompt's stream
    mine = [i for i, call in enumerate(calls) if any(s == stream for s, _ in call)]
    chunks = [[pos for s, pos in calls[i] if s == stream] for i in mine]
    assert [p for c in chunks for p in c] == list(range(len(ids)))  # read once, in order
    assert len(chunks) >= len(ids) // 16 and all(len(c) <= 16 for c in chunks), [len(c) for c in chunks]
    assert all(len(calls[i]) == len(chunks[k]) for k, i in enumerate(mine))  # scoring decodes alone ...
    between = [calls[a + 1 : b] for a, b in zip(mine, mine[1:])]
    assert all(
        steps and all(s != stream for call in steps for s, _ in call) for steps in between
    )  # ... replies step between


@needs_llamacpp
@pytest.mark.parametrize(("asked", "chunk"), [(0, 512), (-5, 512), (64, 64), (4096, 512)])
def test_prefill_chunk_zero_means_whole_batches(engines, sharp_gguf, sharp_model_dir, asked, chunk):
    from assistant.llamacpp_engine import N_BATCH

    engine = tiny_llamacpp(engines, sharp_gguf, sharp_model_dir, max_context=256, parallel=1, prefill_chunk=asked)
    try:
        assert N_BATCH == 512 and engine.prefill_chunk == chunk
        assert f"prompts read {chunk} tokens a step" in engine.describe()
    finally:
        engine.close()


@needs_llamacpp
def test_a_batch_invariant_request_never_decodes_a_lone_row(engines, monkeypatch):
    """llama.cpp multiplies one row with other kernels than several, and under an adapter the
    replies parted with their batch: a `batch_invariant` request (evaluations) decoding alone
    gets a throw-away second row in the next stream, which that stream's cache does not keep,
    and the reply is the one it gets without it (this model's logits are not near ties)."""
    _, llama = engines
    rows: list[list[tuple[int, int, bool]]] = []
    decode = llama._ll.llama_decode

    def recording(ctx, batch):
        rows.append([(batch.seq_id[i][0], batch.pos[i], bool(batch.logits[i])) for i in range(batch.n_tokens)])
        return decode(ctx, batch)

    plain = GenerationOptions(temperature=0, max_new_tokens=12, repetition_penalty=1.0)
    steady = replace(plain, batch_invariant=True)
    llama.forget_prompts()
    held = llama.generate(PROMPTS[0], plain, adapter="pirate")  # a cache the spare row must not disturb
    monkeypatch.setattr(llama._ll, "llama_decode", recording)
    alone = llama.generate(PROMPTS[2], plain, adapter="pirate")
    assert all(len(r) == 1 for r in rows[1:]), rows  # alone, plain: one row per step
    rows.clear()
    got = llama.generate(PROMPTS[2], steady, adapter="pirate")
    assert got.text == alone.text
    steps = [r for r in rows if len(r) <= 2]
    assert steps and all(len(r) == 2 for r in steps), rows
    for (stream, _, wanted), (spare, pos, spare_logits) in steps:
        assert wanted and not spare_logits and abs(spare - stream) == 1
        assert pos == llama._ll.llama_memory_seq_pos_max(llama._mem, spare) + 1  # dropped after each step
    again = llama.generate(PROMPTS[0], plain, adapter="pirate")  # the neighbour's cache is intact
    assert again.cached_tokens == again.prompt_tokens - 1 and again.text == held.text


@needs_llamacpp
def test_stop_ends_one_sequence_of_a_batch(engines):
    _, llama = engines
    long = GenerationOptions(temperature=1.0, top_p=1.0, max_new_tokens=200, repetition_penalty=1.0, seed=2)
    keep = llama.generate(PROMPTS[1], GREEDY)
    stopped = llama.stream(PROMPTS[0], long, adapter="pirate")
    others = [llama.stream(PROMPTS[1], GREEDY) for _ in range(2)]
    first = next(iter(stopped))
    stopped.stop()
    result = stopped.wait(30)
    assert first and result.finish_reason in {"stopped", "stop"}  # the random model may end by itself
    if result.finish_reason == "stopped":
        assert result.completion_tokens < 200
    for gen in others:
        assert gen.wait(30).text == keep.text


@needs_llamacpp
def test_batches_list_streams_in_order_and_rounds_take_consecutive_streams(engines, monkeypatch):
    """With a cache per stream, llama.cpp runs the model once per run of consecutive stream
    numbers in a batch, in the order they first appear: every batch lists its sequences in
    ascending stream order, each one's tokens together, and each round of concurrent requests
    takes consecutive streams (taking them least recently used first gave 4, 0, 1, 2)."""
    _, llama = engines
    seen: list[list[int]] = []
    decode = llama._ll.llama_decode

    def recording(ctx, batch):
        seen.append([batch.seq_id[i][0] for i in range(batch.n_tokens)])
        return decode(ctx, batch)

    monkeypatch.setattr(llama._ll, "llama_decode", recording)
    options = GenerationOptions(temperature=0, max_new_tokens=6)
    for round_ in range(3):
        llama.forget_prompts()  # no cache to reuse: every request picks a stream by place
        seen.clear()
        with llama._between_steps():  # all submitted before the scheduler's next step: they start together
            gens = [llama.stream(PROMPTS[i % 3], options) for i in range(llama.parallel)]
        assert all(g.wait(60).completion_tokens > 0 for g in gens)
        for ids in seen:
            firsts = [s for i, s in enumerate(ids) if i == 0 or ids[i - 1] != s]
            assert firsts == sorted(set(firsts)), (round_, ids)
        streams = sorted({s for ids in seen for s in ids})
        assert streams == list(range(streams[0], streams[0] + llama.parallel)), (round_, streams)


@needs_llamacpp
def test_requests_beyond_parallel_wait_their_turn(engines):
    _, llama = engines
    gens = [llama.stream(PROMPTS[i % 3], GREEDY) for i in range(llama.parallel * 2 + 1)]
    results = [g.wait(60) for g in gens]
    assert all(r.finish_reason in {"stop", "length"} and r.completion_tokens > 0 for r in results)


@needs_llamacpp
def test_concurrent_adapter_loading_while_decoding(engines, sharp_model_dir, random_lora, tmp_path):
    """Re-publishing an adapter (a new version under the same name) while others decode."""
    _, llama = engines
    gens = [llama.stream(PROMPTS[0], GREEDY, adapter="pirate") for _ in range(3)]
    fresh = random_lora(sharp_model_dir, tmp_path / "pirate2", seed=9)
    errors = []

    def reload():
        try:
            llama.load_adapter("swap", fresh, version="v2")
        except Exception as exc:  # noqa: BLE001 - any failure is reported by the assert below
            errors.append(exc)

    t = threading.Thread(target=reload)
    t.start()
    t.join(60)
    assert not errors
    assert all(g.wait(30).finish_reason in {"stop", "length"} for g in gens)
    assert llama.generate(PROMPTS[0], GREEDY, adapter="swap").completion_tokens > 0
    llama.unload_adapter("swap")


# Scoring given text (assistant/llamacpp_scoring.py): torch's numbers on the f32 model, to ~1e-5
# with an exact engine (f32 cache), within the f16 cache's rounding with the default one.
SPANS = ["45 euros", "by card", "the counter", "free", "45", "brakes are checked for free at the counter"]
# nats per token with the default f16 cache and plain attention, which rounds the query and the
# attention weights to f16: the most measured on this sharp model is 0.008 (0.005 with flash
# attention, whose kernel for 64+ tokens works in f32 but whose kernel for a few does not)
F16_CACHE = 0.01
GROUNDED = [{"role": "system", "content": SOURCE}, {"role": "user", "content": "How much is the deposit?"}]


@pytest.fixture(scope="module")
def exact(engines, sharp_gguf, sharp_model_dir, tiny_adapter, other_adapter):
    """A llama.cpp engine with an f32 cache and plain attention on the f32 model."""
    engine = tiny_llamacpp(engines, sharp_gguf, sharp_model_dir, max_context=512, parallel=2, exact=True)
    engine.load_adapter("pirate", tiny_adapter)
    engine.load_adapter("other", other_adapter)
    yield engine
    engine.close()


@needs_llamacpp
@pytest.mark.parametrize("adapter", [None, "pirate", "other"])
def test_span_logprobs_match_torch(engines, exact, adapter):
    """Candidates of different lengths, one of a single token, scored after one prompt; again
    with the prompt already in a stream's cache."""
    torch_engine, _ = engines
    expected = torch_engine.span_logprobs(GROUNDED, "The answer is ", SPANS, adapter)
    for _ in range(2):
        got = exact.span_logprobs(GROUNDED, "The answer is ", SPANS, adapter)
        assert [n for _, n in got] == [n for _, n in expected]
        for (total, n), (want, _) in zip(got, expected):
            assert total == pytest.approx(want, abs=1e-4 * n)
    assert exact.span_logprobs(GROUNDED, "The answer is ", [], adapter) == []


@needs_llamacpp
def test_span_logprobs_with_the_default_cache_are_close(engines):
    torch_engine, llama = engines
    expected = torch_engine.span_logprobs(GROUNDED, "The answer is ", SPANS, "pirate")
    got = llama.span_logprobs(GROUNDED, "The answer is ", SPANS, "pirate")
    assert [n for _, n in got] == [n for _, n in expected]
    for (total, n), (want, _) in zip(got, expected):
        assert total == pytest.approx(want, abs=F16_CACHE * n)


@needs_llamacpp
@pytest.mark.parametrize("adapter", [None, "other"])
def test_reference_loss_matches_torch_and_does_not_disturb_decoding(engines, exact, adapter):
    """`score` between decoding steps: torch's loss, and a reply decoding meanwhile is unchanged."""
    from assistant.errors import ValidationError

    torch_engine, _ = engines
    alone = exact.generate(PROMPTS[2], GREEDY, adapter="pirate").text
    running = exact.stream(PROMPTS[2], GREEDY, adapter="pirate")
    for messages in PROMPTS + [GROUNDED]:
        want, n = torch_engine.score(messages, "Ahoy! The deposit is 45 euros, by card.", adapter)
        got, m = exact.score(messages, "Ahoy! The deposit is 45 euros, by card.", adapter)
        assert m == n and got == pytest.approx(want, abs=1e-4)
    assert running.wait(30).text == alone
    with pytest.raises(ValidationError, match="empty"):
        exact.score(PROMPTS[0], "  ")
    with pytest.raises(ValidationError, match="not loaded"):
        exact.score(PROMPTS[0], "yes", adapter="nobody")


@needs_llamacpp
def test_a_prompt_that_starts_like_a_cached_one_decodes_only_the_rest(engines, exact):
    """The reply after scoring reuses the scored prompt, a chat's next turn reuses the last
    one, and a cache made under one adapter is never read under another; every reply is the
    one torch gives the same messages."""
    from assistant.answer_choice import ANSWER_PREFIX
    from assistant.prompting import build_messages, with_answer_hint

    torch_engine, _ = engines
    options = replace(GREEDY, max_new_tokens=12)
    grounded = build_messages([], "How much is the deposit?", "", [_passage(SOURCE)])
    for adapter in ("pirate", None):
        exact.span_logprobs(grounded, ANSWER_PREFIX, ["45 euros", "by card"], adapter)
        hinted = with_answer_hint(grounded, "45 euros")
        reply = exact.generate(hinted, options, adapter=adapter)
        prompt = exact.encode(hinted)
        assert 0 < reply.cached_tokens < len(prompt) and reply.cached_tokens > len(prompt) // 2, reply
        assert reply.text == torch_engine.generate(hinted, options, adapter=adapter).text
    # the same prompt under another adapter: decoded anew (at most the template's first tokens
    # come from an earlier request under that adapter), not read from the base's cache
    assert exact.generate(hinted, options, adapter="other").cached_tokens <= 3
    assert exact.generate(hinted, options).cached_tokens == len(prompt) - 1
    # a chat's next turn starts with the last turn's prompt (and its reply, where the reply's
    # text tokenizes back to the same ids: not this random model's bytes)
    opening = [{"role": "user", "content": f"{SOURCE} How much is the deposit?"}]
    first = exact.generate(opening, options)
    turn = opening + [{"role": "assistant", "content": "45 euros."}, {"role": "user", "content": "And the brakes?"}]
    second = exact.generate(turn, options)
    assert second.cached_tokens >= first.prompt_tokens
    assert second.text == torch_engine.generate(turn, options).text
    # the same messages again: all but the last prompt token come from the cache
    again = exact.generate(turn, options)
    assert again.cached_tokens == again.prompt_tokens - 1 and again.text == second.text


def _passage(text):
    from assistant.prompting import Passage

    return Passage(id="p1", source="rentals.md", text=text)


def test_auto_falls_back_to_torch_with_one_log_line(monkeypatch, caplog, tiny_model_dir):
    from assistant import backends
    from assistant.hardware import pick_hardware
    from assistant.models import ResolvedModel

    monkeypatch.setattr(backends, "llamacpp_status", lambda: (False, "llama-cpp-python is not installed"))
    with caplog.at_level(logging.WARNING, logger="assistant.backends"):
        engine = backends.load_engine(
            ResolvedModel("tiny", tiny_model_dir, "folder"), pick_hardware("cpu"), backend="llamacpp", max_context=512
        )
    assert engine.backend == "torch"
    assert [r.getMessage() for r in caplog.records] == [
        "Engine: using torch, because llama-cpp-python is not installed."
    ]


@needs_llamacpp  # the child process only runs where the library is installed
def test_a_library_that_crashes_the_process_is_detected(monkeypatch):
    """A build for another CPU dies with SIGILL: the probe runs in a child process."""
    from assistant import backends

    backends.llamacpp_status.cache_clear()
    monkeypatch.setattr(backends, "_PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGILL)")
    try:
        usable, reason = backends.llamacpp_status()
    finally:
        backends.llamacpp_status.cache_clear()
    assert not usable and "signal 4" in reason


def test_unknown_backend_is_a_clear_error():
    from assistant.backends import choose_backend
    from assistant.errors import ModelError
    from assistant.hardware import pick_hardware

    with pytest.raises(ModelError, match="TAILOR_ENGINE must be one of auto, torch, llamacpp"):
        choose_backend("vllm", pick_hardware("cpu"))


@needs_llamacpp
@pytest.mark.real
def test_real_default_model_says_paris_on_both_backends(real_model, real_engine):
    from assistant.backends import load_engine
    from assistant.hardware import pick_hardware

    llama = load_engine(real_model, pick_hardware("cpu"), backend="llamacpp", max_context=2048, parallel=2)
    try:
        # A phrasing the fp32 model answers without a near-tie: with the chat's repetition
        # penalty, "What is the capital of France? Answer in one word." puts "Paris" after a
        # sixth token that q8_0 and Q4_1 round different ways ("The answer to this classic
        # French question is "Paris"" on Q4_1, "...classic question requires..." on q8_0).
        messages = [{"role": "user", "content": "Name the capital city of France."}]
        options = GenerationOptions(temperature=0, max_new_tokens=16)
        for engine in (real_engine, llama):
            assert "paris" in engine.generate(messages, options).text.lower(), engine.backend
    finally:
        llama.close()


@needs_llamacpp
def test_a_hugging_face_folder_is_converted_once_for_llamacpp(sharp_model_dir, tmp_path):
    """TAILOR_MODEL naming a model folder: converted to GGUF (q8_0) in the model cache at the
    first start, with a progress line, and reused at the next."""
    from assistant.backends import load_engine
    from assistant.hardware import pick_hardware
    from assistant.models import ResolvedModel

    resolved = ResolvedModel(str(sharp_model_dir), sharp_model_dir, "folder")
    said: list[str] = []

    def start():
        return load_engine(
            resolved,
            pick_hardware("cpu"),
            backend="llamacpp",
            max_context=256,
            parallel=2,
            models_dir=tmp_path,
            progress=said.append,
        )

    engine = start()
    try:
        converted = list(tmp_path.glob("*.q8_0.gguf"))
        assert len(converted) == 1 and engine.gguf == converted[0]
        assert any("Converting" in line and "GGUF" in line for line in said)
        assert engine.generate(PROMPTS[0], GREEDY).completion_tokens > 0
    finally:
        engine.close()
    mtime = converted[0].stat().st_mtime_ns
    said.clear()
    start().close()
    assert converted[0].stat().st_mtime_ns == mtime and not any("Converting" in line for line in said)


@needs_llamacpp
def test_auto_weights_are_q8_0_for_the_embedded_model_and_a_gguf_file_as_is(sharp_model_dir, sharp_gguf, tmp_path):
    """TAILOR_GGUF_WEIGHTS=auto (the default): the embedded default model's file is re-encoded
    once as q8_0 in the model cache (llama.cpp's tiled q8_0 kernels read prompts and batches
    faster than its Q4_1 ones); a GGUF file the user named runs as it is."""
    from assistant.backends import base_gguf
    from assistant.models import ResolvedModel

    embedded = ResolvedModel("sharp", sharp_model_dir, "embedded", sharp_gguf)
    made = base_gguf(embedded, tmp_path, "auto", progress=lambda _: None)
    assert made == tmp_path / "sharp.q8_0.gguf" and made.is_file()
    assert base_gguf(embedded, tmp_path, "embedded") == sharp_gguf
    mtime = made.stat().st_mtime_ns
    assert base_gguf(embedded, tmp_path) == made and made.stat().st_mtime_ns == mtime  # made once
    named = ResolvedModel("sharp", sharp_model_dir, "gguf", sharp_gguf)
    assert base_gguf(named, tmp_path, "auto") == sharp_gguf


def test_unknown_gguf_weights_is_a_clear_error(tiny_model_dir, tmp_path):
    from assistant.backends import base_gguf
    from assistant.errors import ModelError
    from assistant.models import ResolvedModel

    with pytest.raises(ModelError, match="TAILOR_GGUF_WEIGHTS must be one of auto, embedded, f32, f16, q8_0"):
        base_gguf(ResolvedModel("tiny", tiny_model_dir, "folder"), tmp_path, "q2")


@needs_llamacpp
def test_scoring_runs_on_the_scheduler_thread(engines, monkeypatch):
    """Every llama.cpp computation stays on the engine's own thread (and its OpenMP workers):
    on AMX CPUs a caller's thread may have had its tiles released by torch (next test)."""
    _, llama = engines
    seen: list[str] = []
    real_loss = llama._scorer.loss

    def loss(*args, **kwargs):
        seen.append(threading.current_thread().name)
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(llama._scorer, "loss", loss)
    messages = [{"role": "user", "content": "hello there"}]
    assert llama.score(messages, "hi!")[1] > 0
    assert seen == ["tailor-llamacpp"] and threading.current_thread().name != "tailor-llamacpp"
    monkeypatch.setattr(llama._scorer, "loss", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # the caller gets the scorer's error, the engine goes on
        llama.score(messages, "hi!")
    assert llama.generate(messages, GenerationOptions(temperature=0, max_new_tokens=4)).completion_tokens > 0


BF16_BETWEEN_SCORES = """
import sys
import assistant
import torch
from assistant.backends import load_engine
from assistant.hardware import pick_hardware
from assistant.models import resolve_model
from pathlib import Path

engine = load_engine(resolve_model(None, Path(sys.argv[1])), pick_hardware("cpu"), backend="llamacpp",
                     models_dir=Path(sys.argv[2]), parallel=2)
messages = [{"role": "user", "content": "When does the shop open on Saturdays? " * 8}]
first = engine.score(messages, "At ten in the morning.")
q = torch.randn(1, 4, 64, 64).bfloat16()  # AMX tiles on this thread, released afterwards
torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
with torch.autocast("cpu", dtype=torch.bfloat16):
    torch.nn.Linear(576, 1536)(torch.randn(256, 576)).sum().item()
engine.forget_prompts()  # read the prompt again, not from the cache
assert engine.score(messages, "At ten in the morning.") == first
from assistant.llamacpp_params import use_extra_buffers
assert use_extra_buffers(engine.gguf), "the AMX buffers were not used"
print("ok", engine.describe())
"""


@needs_llamacpp
@pytest.mark.real
def test_torch_amx_on_the_callers_thread_leaves_the_engines_scoring_alone(real_model, real_models_dir, tmp_path):
    """torch's bf16 attention and products release the AMX tiles of the thread they run on, and
    llama.cpp sets a thread's tiles once: scoring on the caller's thread then died with SIGILL.
    The engine scores on its own thread, so a caller may run torch between two scores."""
    from assistant import llamacpp_params

    gguf = real_model.gguf
    if not llamacpp_params.cpu_has_amx() or not llamacpp_params.amx_buffers_work(gguf):
        pytest.skip("needs a CPU with AMX and a llama.cpp build whose AMX kernels work")
    done = subprocess.run(
        [sys.executable, "-c", BF16_BETWEEN_SCORES, str(real_models_dir), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.startswith("ok"), (done.returncode, done.stderr[-3000:])
