"""PEFT LoRA -> GGUF LoRA (assistant/gguf_lora.py): llama.cpp with the converted adapter must
compute what PEFT computes, and clearly not what the base computes (so a dropped adapter or a
wrong scale fails). Random non-zero adapters come from the `random_lora` fixture. Tests that run
llama.cpp skip when llama-cpp-python is not installed; the format and error tests do not."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from assistant.errors import ModelError
from assistant.gguf_convert import convert_folder_to_gguf
from assistant.gguf_lora import convert_lora_to_gguf, ensure_lora_gguf, lora_gguf_path
from assistant.llamacpp_params import open_llama

ALL_7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
NO_LLAMA_CPP = "llama-cpp-python is not installed (pip install llama-cpp-python)"
PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nThe capital is",
]
REAL_PROMPTS = PROMPTS[1:]  # one prompt is enough for the real model, and each costs seconds there


def llama_logits(path: Path, ids: list[int], *, lora: Path | None = None) -> np.ndarray:
    """Logits (positions x vocab) from llama.cpp, with an f32 KV cache so f32 weights compare to ~1e-5.
    One thread: on a busy 2-core machine two ggml threads spin against each other (~8x slower)."""
    llama_cpp = pytest.importorskip("llama_cpp", reason=NO_LLAMA_CPP)
    f32 = llama_cpp.GGML_TYPE_F32
    kwargs = {"lora_path": str(lora)} if lora else {}
    llm = open_llama(
        model_path=str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=1, type_k=f32, type_v=f32, **kwargs
    )
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def peft_logits(base_folder: Path, adapter: Path, ids_list: list[list[int]]) -> tuple[list, list]:
    """(with the adapter, without it) for each prompt, from transformers + PEFT in fp32."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_folder), adapter).eval()
    with torch.no_grad():
        tuned = [model(torch.tensor([ids])).logits[0].numpy() for ids in ids_list]
        with model.disable_adapter():
            base = [model(torch.tensor([ids])).logits[0].numpy() for ids in ids_list]
    return tuned, base


def token_ids(folder: Path, prompts: list[str] = PROMPTS) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    return [tok(p, add_special_tokens=False).input_ids for p in prompts]


def assert_adapter_agrees(
    base_gguf: Path, lora_gguf: Path, base_folder: Path, adapter: Path, tol: float, prompts: list[str] = PROMPTS
) -> None:
    """llama.cpp + LoRA matches PEFT (max diff < tol, same argmax everywhere), and the adapter's
    effect is many times the tolerance, so the comparison could fail."""
    ids_list = token_ids(base_folder, prompts)
    tuned, base = peft_logits(base_folder, adapter, ids_list)
    for ids, want, want_base in zip(ids_list, tuned, base):
        got = llama_logits(base_gguf, ids, lora=lora_gguf)
        effect = float(np.abs(want - want_base).max())
        diff = float(np.abs(got - want).max())
        assert effect > 50 * tol, f"the adapter barely changes the logits ({effect:.3g}): the test could not fail"
        assert diff < tol, f"max |llama.cpp+LoRA - PEFT| = {diff:.3g} (tolerance {tol}; adapter effect {effect:.3g})"
        wrong = np.flatnonzero(got.argmax(-1) != want.argmax(-1))
        assert wrong.size == 0, f"argmax differs at positions {wrong.tolist()}"


def read_gguf(path: Path):
    from gguf import GGUFReader

    reader = GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items()}, {t.name: t for t in reader.tensors}


@pytest.fixture(scope="module")
def tiny_f32(tiny_model_dir, tmp_path_factory) -> Path:
    return convert_folder_to_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf", outtype="f32")


@pytest.fixture(scope="module")
def tiny_lora(tiny_model_dir, tmp_path_factory, random_lora) -> Path:
    """The fixture's default adapter: q, k, v, o, down; r 4; alpha 16."""
    return random_lora(tiny_model_dir, tmp_path_factory.mktemp("adapters") / "default")


# ---- the file format, without llama.cpp --------------------------------------------------------------


def test_metadata_names_shapes_and_permuted_b(tiny_model_dir, tiny_lora, tmp_path):
    from safetensors.numpy import load_file

    from assistant.gguf_convert import rope_permute

    out = convert_lora_to_gguf(tiny_lora, tiny_model_dir, tmp_path / "a.gguf")
    fields, tensors = read_gguf(out)
    assert fields["general.architecture"] == "llama" and fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora" and fields["adapter.lora.alpha"] == 16.0
    assert len(tensors) == 2 * 2 * 5  # 2 layers x 5 modules x (a, b)
    assert list(tensors["blk.1.attn_q.weight.lora_a"].shape) == [32, 4]  # ne = [in, r]
    assert list(tensors["blk.1.attn_k.weight.lora_b"].shape) == [4, 16]  # ne = [r, out]
    assert list(tensors["blk.0.ffn_down.weight.lora_a"].shape) == [64, 4]
    peft = load_file(str(tiny_lora / "adapter_model.safetensors"))
    prefix = "base_model.model.model.layers.0."
    b_k = np.array(tensors["blk.0.attn_k.weight.lora_b"].data).reshape(16, 4)
    assert (b_k == rope_permute(peft[prefix + "self_attn.k_proj.lora_B.weight"], 2)).all()  # 2 kv heads
    b_v = np.array(tensors["blk.0.attn_v.weight.lora_b"].data).reshape(16, 4)
    assert (b_v == peft[prefix + "self_attn.v_proj.lora_B.weight"]).all()  # plain LoRA: B bit for bit


# PEFT warns about adapting a tied embedding; that adapter exists only to be refused here
@pytest.mark.filterwarnings("ignore:.*tie_word_embeddings:UserWarning", "ignore:Setting `save_embedding_layers`")
def test_unsupported_target_modules_are_refused(tiny_model_dir, random_lora, tmp_path):
    for module in ["lm_head", "embed_tokens"]:
        adapter = random_lora(tiny_model_dir, tmp_path / module, target_modules=["q_proj", module])
        with pytest.raises(ModelError, match=f"not supported: .*{module}.*Supported target modules: q_proj"):
            convert_lora_to_gguf(adapter, tiny_model_dir, tmp_path / f"{module}.gguf")
        assert not (tmp_path / f"{module}.gguf").exists()


def test_dora_and_trained_biases_are_refused(tiny_model_dir, random_lora, tmp_path):
    dora = random_lora(tiny_model_dir, tmp_path / "dora", use_dora=True)
    with pytest.raises(ModelError, match="DoRA"):
        convert_lora_to_gguf(dora, tiny_model_dir, tmp_path / "dora.gguf")
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": False, "bias": "all"}))
    with pytest.raises(ModelError, match="trains biases"):
        convert_lora_to_gguf(dora, tiny_model_dir, tmp_path / "dora.gguf")


def test_missing_files_and_a_wrong_base_are_clear_errors(tiny_model_dir, tiny_lora, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        convert_lora_to_gguf(tmp_path / "nowhere", tiny_model_dir, tmp_path / "a.gguf")
    adapter = Path(shutil.copytree(tiny_lora, tmp_path / "copy"))
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(ModelError, match="has no adapter_model.safetensors"):
        convert_lora_to_gguf(adapter, tiny_model_dir, tmp_path / "a.gguf")
    (adapter / "adapter_config.json").unlink()
    with pytest.raises(ModelError, match="no adapter_config.json"):
        convert_lora_to_gguf(adapter, tiny_model_dir, tmp_path / "a.gguf")
    with pytest.raises(ModelError, match="no config.json"):
        convert_lora_to_gguf(tiny_lora, tmp_path, tmp_path / "a.gguf")
    wider = tmp_path / "wider"  # the adapter reads only the base's config.json
    wider.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps({**config, "hidden_size": 48}))
    with pytest.raises(ModelError, match="does not fit the base model.*trained on another model"):
        convert_lora_to_gguf(tiny_lora, wider, tmp_path / "a.gguf")
    assert not (tmp_path / "a.gguf").exists()


def test_ensure_converts_once_and_again_when_the_adapter_changes(tiny_model_dir, tiny_lora, tmp_path, monkeypatch):
    import assistant.gguf_lora as gl

    adapter = Path(shutil.copytree(tiny_lora, tmp_path / "adapter"))
    calls = []
    real = gl.convert_lora_to_gguf

    def counting(*args):
        calls.append(args)
        time.sleep(0.3)  # long enough for the second thread to reach the lock
        return real(*args)

    monkeypatch.setattr(gl, "convert_lora_to_gguf", counting)
    threads = [threading.Thread(target=ensure_lora_gguf, args=(adapter, tiny_model_dir)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    target = lora_gguf_path(adapter)
    assert target == adapter / "adapter.gguf" and target.is_file() and len(calls) == 1
    assert ensure_lora_gguf(adapter, tiny_model_dir) == target and len(calls) == 1
    later = target.stat().st_mtime + 10
    os.utime(adapter / "adapter_model.safetensors", (later, later))  # a re-trained adapter
    assert ensure_lora_gguf(adapter, tiny_model_dir) == target and len(calls) == 2
    with pytest.raises(ModelError, match="does not exist"):
        ensure_lora_gguf(tmp_path / "missing", tiny_model_dir)


# ---- llama.cpp + the GGUF LoRA computes what PEFT computes --------------------------------------------


def test_tiny_default_adapter_matches_peft(tiny_model_dir, tiny_f32, tiny_lora, tmp_path):
    pytest.importorskip("llama_cpp", reason=NO_LLAMA_CPP)
    lora = convert_lora_to_gguf(tiny_lora, tiny_model_dir, tmp_path / "a.gguf")
    assert_adapter_agrees(tiny_f32, lora, tiny_model_dir, tiny_lora, tol=1e-4)


@pytest.mark.parametrize(
    "config",
    [
        dict(target_modules=ALL_7, r=8, lora_alpha=32),
        dict(target_modules=ALL_7, use_rslora=True),  # scale alpha / sqrt(r), folded into B
        dict(target_modules=ALL_7, rank_pattern={"q_proj": 2}, alpha_pattern={"down_proj": 4}),
        dict(target_modules=["q_proj", "v_proj"], lora_alpha=0),  # PEFT: scale 0; llama.cpp alpha 0 means 1
    ],
    ids=["all-7", "rslora", "patterns", "alpha-0"],
)
def test_tiny_adapter_variants_match_peft(config, tiny_model_dir, tiny_f32, random_lora, tmp_path):
    pytest.importorskip("llama_cpp", reason=NO_LLAMA_CPP)
    adapter = random_lora(tiny_model_dir, tmp_path / "adapter", seed=3, **config)
    lora = convert_lora_to_gguf(adapter, tiny_model_dir, tmp_path / "a.gguf")
    if config.get("lora_alpha") == 0:  # the adapter is a no-op in PEFT and must be one in llama.cpp
        ids = token_ids(tiny_model_dir)[0]
        assert np.abs(llama_logits(tiny_f32, ids, lora=lora) - llama_logits(tiny_f32, ids)).max() < 1e-6
        return
    assert_adapter_agrees(tiny_f32, lora, tiny_model_dir, adapter, tol=1e-4)


def test_qwen2_adapter_matches_peft(tiny_model_dir, random_lora, tmp_path):
    pytest.importorskip("llama_cpp", reason=NO_LLAMA_CPP)
    from .test_gguf_convert import variant_model

    folder = variant_model(tiny_model_dir, tmp_path / "qwen2", "qwen2")
    base = convert_folder_to_gguf(folder, tmp_path / "qwen2.gguf", outtype="f32")
    adapter = random_lora(folder, tmp_path / "adapter", target_modules=ALL_7)
    lora = convert_lora_to_gguf(adapter, folder, tmp_path / "a.gguf")
    assert read_gguf(lora)[0]["general.architecture"] == "qwen2"
    assert_adapter_agrees(base, lora, folder, adapter, tol=1e-4)


# ---- the real default model --------------------------------------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ALL_7], ids=["q-v", "all-7"])
def test_real_model_adapter_matches_peft(targets, real_model, random_lora, tmp_path, tmp_path_factory):
    pytest.importorskip("llama_cpp", reason=NO_LLAMA_CPP)
    from .test_gguf_convert import real_f16

    base = real_f16(real_model, tmp_path_factory)
    adapter = random_lora(real_model.path, tmp_path / "adapter", r=8, lora_alpha=16, target_modules=targets)
    lora = convert_lora_to_gguf(adapter, real_model.path, tmp_path / "a.gguf")
    # the base is f16 in llama.cpp and fp32 in PEFT: compare with the f16 rounding's tolerance
    assert_adapter_agrees(base, lora, real_model.path, adapter, tol=0.1, prompts=REAL_PROMPTS)
