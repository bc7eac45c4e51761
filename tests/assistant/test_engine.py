import threading

import pytest

from assistant.engine import GenerationOptions
from assistant.errors import ValidationError

GREEDY = GenerationOptions(temperature=0, max_new_tokens=24, repetition_penalty=1.0)


def test_streaming_yields_growing_text(tiny_engine):
    gen = tiny_engine.stream([{"role": "user", "content": "hello"}], GREEDY)
    seen = list(gen)
    result = gen.wait(30)
    assert len(seen) >= 2
    for before, after in zip(seen, seen[1:]):
        assert after.startswith(before)  # each update extends the previous one
    assert result.completion_tokens >= 1 and result.prompt_tokens > 0
    assert result.text == seen[-1].strip()
    assert result.finish_reason in {"stop", "length"}
    assert result.ttft_s is not None and result.latency_s >= result.ttft_s


def test_greedy_is_deterministic(tiny_engine):
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    assert tiny_engine.generate(msgs, GREEDY).text == tiny_engine.generate(msgs, GREEDY).text


def test_seeded_sampling_is_reproducible(tiny_engine):
    opts = GenerationOptions(temperature=1.0, top_p=1.0, max_new_tokens=16, seed=7)
    msgs = [{"role": "user", "content": "hello"}]
    assert tiny_engine.generate(msgs, opts).text == tiny_engine.generate(msgs, opts).text


def test_stop_ends_generation_early(tiny_engine):
    opts = GenerationOptions(temperature=1.0, max_new_tokens=200, repetition_penalty=1.0, seed=1)
    # Ban the end-of-turn token so only the stop request can end it before 200 tokens.
    gen = tiny_engine.stream([{"role": "user", "content": "talk forever"}], opts)
    first = next(iter(gen))
    gen.stop()
    for _ in gen:
        pass
    result = gen.wait(30)
    assert first
    if result.finish_reason != "stop":  # the random model may also emit end-of-turn by itself
        assert result.finish_reason == "stopped"
        assert result.completion_tokens < 200


def test_history_trimming_keeps_system_and_newest(tiny_engine):
    system = {"role": "system", "content": "You are terse."}
    turns = []
    for i in range(40):
        turns.append({"role": "user", "content": f"question number {i} " + "about bikes " * 10})
        turns.append({"role": "assistant", "content": f"answer number {i} " + "with words " * 10})
    turns.append({"role": "user", "content": "the newest question"})
    kept, dropped = tiny_engine.fit_messages([system] + turns, max_new_tokens=64)
    assert dropped > 0
    assert kept[0] == system
    assert kept[-1]["content"] == "the newest question"
    assert kept[1]["role"] == "user"  # history restarts at a user turn
    assert tiny_engine.count_tokens(kept) <= tiny_engine.context_window - 64
    assert kept[1:] == turns[-(len(kept) - 1) :]  # what is kept is the newest, unchanged


def test_overlong_single_message_keeps_its_end(tiny_engine):
    text = "start " + "filler words " * 400 + "THE END"
    kept, _ = tiny_engine.fit_messages([{"role": "user", "content": text}], max_new_tokens=32)
    assert kept[-1]["content"].endswith("THE END")
    assert tiny_engine.count_tokens(kept) <= tiny_engine.context_window - 32
    gen = tiny_engine.stream([{"role": "user", "content": text}], GenerationOptions(max_new_tokens=8))
    assert gen.wait(30).finish_reason != "error"


def test_invalid_options_are_rejected(tiny_engine):
    msgs = [{"role": "user", "content": "hi"}]
    for bad in (
        GenerationOptions(temperature=-1),
        GenerationOptions(top_p=0),
        GenerationOptions(max_new_tokens=0),
        GenerationOptions(max_new_tokens=10_000),
    ):
        with pytest.raises(ValidationError):
            tiny_engine.stream(msgs, bad)
    with pytest.raises(ValidationError):
        tiny_engine.stream([{"role": "system", "content": "only a system prompt"}], GREEDY)
    with pytest.raises(ValidationError, match="not loaded"):
        tiny_engine.stream(msgs, GREEDY, adapter="nope")


def test_concurrent_generations_are_serialised(tiny_engine):
    results = []

    def run():
        results.append(tiny_engine.generate([{"role": "user", "content": "hello"}], GREEDY))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 3 and len({r.text for r in results}) == 1


def test_adapter_hot_swap_without_reloading_base(tiny_model_dir, tmp_path, random_lora):
    from assistant.hardware import pick_hardware
    from assistant.models import ResolvedModel
    from assistant.torch_engine import TorchEngine

    # A LoRA adapter with non-zero weights (a strong one: alpha 64) so it changes the output.
    random_lora(tiny_model_dir, tmp_path / "ad1", seed=3, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"])

    engine = TorchEngine.load(ResolvedModel("tiny", tiny_model_dir, "folder"), pick_hardware("cpu"), max_context=512)
    base_weights = engine.base_model.model.embed_tokens.weight
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    before = engine.generate(msgs, GREEDY).text
    engine.load_adapter("ad1", tmp_path / "ad1")
    assert engine.adapters == ["ad1"]
    tuned = engine.generate(msgs, GREEDY, adapter="ad1")
    assert tuned.adapter == "ad1"
    assert engine.generate(msgs, GREEDY).text == before  # base is still the base (disable_adapter)
    assert tuned.text != before
    # The base weights are the very same tensor: nothing was reloaded.
    assert engine.base_model.model.embed_tokens.weight is base_weights
    engine.load_adapter("ad1", tmp_path / "ad1")  # same version: no-op
    engine.load_adapter("ad2", tmp_path / "ad1")
    engine.unload_adapter("ad1")
    assert engine.generate(msgs, GREEDY).text == before  # base still works with one adapter left
    engine.unload_adapter("ad2")
    assert engine.adapters == []
    assert engine.generate(msgs, GREEDY).text == before  # and with none left
    engine.load_adapter("ad1", tmp_path / "ad1")  # loading again after a full unload works
    assert engine.generate(msgs, GREEDY, adapter="ad1").text == tuned.text
