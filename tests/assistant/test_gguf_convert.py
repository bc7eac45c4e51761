"""Hugging Face folder -> GGUF (assistant/gguf_convert.py): llama.cpp must compute what
transformers computes. The tiny random models (Llama as the fixture builds it, a Qwen2 with q/k/v
biases and an untied head, a Llama with attention biases and Llama 3 rope scaling) check the
layout exactly in f32; the real default model checks greedy agreement in f16. Tests that run
llama.cpp skip when llama-cpp-python is not installed; the metadata and error tests do not."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from assistant.errors import ModelError
from assistant.gguf_convert import (
    SUPPORTED_ARCHITECTURES,
    convert_folder_to_gguf,
    detect_pre_tokenizer,
    quantize_gguf,
    rope_permute,
)
from assistant.llamacpp_params import open_llama

NO_LLAMA_CPP = "llama-cpp-python is not installed (pip install llama-cpp-python)"
PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris. 0123456789",
    "<|im_start|>user\nAhoy, rider! Pump your tyres?<|im_end|>\n<|im_start|>assistant\n",
]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def llama_logits(path: Path, ids: list[int], *, lora: Path | None = None, threads: int = 1) -> np.ndarray:
    """Logits (positions x vocab) that llama.cpp computes for `ids`, optionally with a LoRA file."""
    llama_cpp = pytest.importorskip("llama_cpp", reason=NO_LLAMA_CPP)
    kwargs = {"lora_path": str(lora)} if lora else {}
    # An f32 KV cache (llama.cpp's default is f16) so that f32 weights compare to ~1e-5.
    f32 = llama_cpp.GGML_TYPE_F32
    llm = open_llama(
        model_path=str(path),
        n_ctx=256,
        logits_all=True,
        verbose=False,
        n_threads=threads,
        type_k=f32,
        type_v=f32,
        **kwargs,
    )
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def hf_logits(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def assert_same_logits(got: np.ndarray, want: np.ndarray, tol: float) -> None:
    diff = float(np.abs(got - want).max())
    assert diff < tol, f"max |llama.cpp - transformers| = {diff:.3g} (tolerance {tol})"
    positions = np.flatnonzero(got.argmax(-1) != want.argmax(-1))
    assert positions.size == 0, f"argmax differs at positions {positions.tolist()}"


def token_ids(folder: Path) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    return [tok(p, add_special_tokens=False).input_ids for p in PROMPTS]


def variant_model(tiny_model_dir: Path, dest: Path, kind: str) -> Path:
    """A tiny random model with the fixture's tokenizer: "qwen2" (q/k/v biases, untied output, and
    16 embedding rows more than the tokenizer has, as Qwen2.5 pads its vocabulary) or "llama3"
    (Llama with attention biases, Llama 3 rope scaling, untied output). Weights are drawn larger
    than the default init so that logits differ clearly between tokens."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    base = json.loads((tiny_model_dir / "config.json").read_text())
    common = dict(
        vocab_size=base["vocab_size"] + (16 if kind == "qwen2" else 0),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=base["bos_token_id"],
        eos_token_id=base["eos_token_id"],
        pad_token_id=base["pad_token_id"],
        tie_word_embeddings=False,
        initializer_range=0.2,
    )
    torch.manual_seed(7)
    if kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common, rms_norm_eps=1e-6))
    else:
        rope = {
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }
        model = LlamaForCausalLM(LlamaConfig(**common, attention_bias=True, rope_parameters=rope))
    with torch.no_grad():  # HF initialises biases to zero, which would hide a wrong bias layout
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0, 0.5)
    model.save_pretrained(dest)
    for name in TOKENIZER_FILES:
        if (tiny_model_dir / name).exists():
            shutil.copy(tiny_model_dir / name, dest / name)
    return dest


def read_gguf(path: Path):
    from gguf import GGUFReader

    reader = GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items()}, {t.name: t for t in reader.tensors}


@pytest.fixture(scope="module")
def tiny_f32(tiny_model_dir, tmp_path_factory) -> Path:
    return convert_folder_to_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf", outtype="f32")


# ---- format facts, without llama.cpp ---------------------------------------------------------------


def test_rope_permute_interleaves_the_two_halves_of_each_head():
    rows = np.arange(2 * 8)  # 2 heads of 8: HF pairs (i, i + 4), ggml pairs (2i, 2i + 1)
    assert rope_permute(rows, 2).tolist() == [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]
    matrix = np.arange(16 * 3).reshape(16, 3)
    assert (rope_permute(matrix, 2)[:, 0] == rope_permute(rows, 2) * 3).all()  # rows move, columns stay


def test_pre_tokenizer_is_read_from_tokenizer_json():
    from assistant.gguf_convert import _LLAMA3_REGEX, _QWEN2_REGEX

    def split_then_bytes(pattern):
        return {
            "pre_tokenizer": {
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated"},
                    {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False},
                ],
            }
        }

    assert detect_pre_tokenizer(split_then_bytes(_LLAMA3_REGEX)) == "llama-bpe"
    assert detect_pre_tokenizer(split_then_bytes(_QWEN2_REGEX)) == "qwen2"
    digits = {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}, {"type": "ByteLevel", "use_regex": True}],
    }
    assert detect_pre_tokenizer({"pre_tokenizer": digits}) == "smollm"
    plain = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    # a vocabulary that merged digits was not trained with them split: GPT-2's regex
    assert detect_pre_tokenizer({"pre_tokenizer": plain, "model": {"vocab": {"1": 0, "2": 1, "12": 2}}}) == "gpt-2"
    assert detect_pre_tokenizer({"pre_tokenizer": plain, "model": {"vocab": {"1": 0, "Ġa": 1}}}) == "smollm"
    assert detect_pre_tokenizer({"pre_tokenizer": {"type": "Whitespace"}}) == "default"


def test_metadata_hyperparameters_and_tokenizer(tiny_model_dir, tiny_f32):
    from transformers import AutoTokenizer

    fields, tensors = read_gguf(tiny_f32)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert fields["general.architecture"] == "llama" and fields["general.type"] == "model"
    assert fields["llama.context_length"] == 512 and fields["llama.embedding_length"] == 32
    assert fields["llama.feed_forward_length"] == 64 and fields["llama.block_count"] == 2
    assert fields["llama.attention.head_count"] == 4 and fields["llama.attention.head_count_kv"] == 2
    assert fields["llama.rope.freq_base"] == 10000.0 and fields["llama.vocab_size"] == config["vocab_size"]
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    assert len(tokens) == config["vocab_size"] and tokens[1] == "<|im_start|>" and types[1] == 3  # CONTROL
    assert tokens[tok.convert_tokens_to_ids("Ġthe")] == "Ġthe" and types[tok.convert_tokens_to_ids("Ġthe")] == 1
    assert len(fields["tokenizer.ggml.merges"]) == len(
        json.loads((tiny_model_dir / "tokenizer.json").read_text())["model"]["merges"]
    )
    assert fields["tokenizer.ggml.bos_token_id"] == tok.bos_token_id
    assert fields["tokenizer.ggml.eos_token_id"] == tok.eos_token_id
    assert fields["tokenizer.ggml.padding_token_id"] == tok.pad_token_id
    assert fields["tokenizer.ggml.add_bos_token"] is False  # the HF tokenizer adds no bos either
    assert fields["tokenizer.chat_template"] == tok.chat_template
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    assert len(tensors) == 2 + 2 * 9


def test_bos_comes_from_config_when_the_tokenizer_has_none(tiny_model_dir, tmp_path):
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "no-bos"))  # like Qwen2.5's tokenizer
    tc = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**tc, "bos_token": None}))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "bos_token_id": 0}))
    fields, _ = read_gguf(convert_folder_to_gguf(folder, tmp_path / "m.gguf", outtype="f32"))
    assert fields["tokenizer.ggml.bos_token_id"] == 0 and fields["tokenizer.ggml.add_bos_token"] is False


def test_f16_keeps_vectors_in_f32(tiny_model_dir, tmp_path):
    _, tensors = read_gguf(convert_folder_to_gguf(tiny_model_dir, tmp_path / "m.gguf"))
    assert tensors["blk.0.attn_q.weight"].tensor_type.name == "F16"
    assert tensors["token_embd.weight"].tensor_type.name == "F16"
    assert tensors["blk.0.attn_norm.weight"].tensor_type.name == "F32"


def test_unsupported_architecture_says_what_is_supported(tiny_model_dir, tmp_path):
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "gpt2ish"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ModelError, match="'GPT2LMHeadModel' is not supported.*LlamaForCausalLM.*Qwen2ForCausalLM"):
        convert_folder_to_gguf(folder, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
    assert set(SUPPORTED_ARCHITECTURES) == {"LlamaForCausalLM", "Qwen2ForCausalLM"}


def test_sentencepiece_style_tokenizer_is_refused(tiny_model_dir, tmp_path):
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "spm"))
    tj = json.loads((folder / "tokenizer.json").read_text())
    tj["model"]["byte_fallback"] = True
    tj["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    (folder / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(ModelError, match="tokenizer .*SentencePiece.* not supported.*byte-level BPE"):
        convert_folder_to_gguf(folder, tmp_path / "out.gguf")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="no tokenizer.json"):
        convert_folder_to_gguf(folder, tmp_path / "out.gguf")


def test_missing_files_are_clear_errors(tiny_model_dir, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        convert_folder_to_gguf(tmp_path / "nowhere", tmp_path / "out.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        convert_folder_to_gguf(tmp_path / "empty", tmp_path / "out.gguf")
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "bin-only"))
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match=r"only PyTorch \*.bin weights; they are not loaded"):
        convert_folder_to_gguf(folder, tmp_path / "out.gguf")
    with pytest.raises(ModelError, match="Unknown GGUF output type"):
        convert_folder_to_gguf(tiny_model_dir, tmp_path / "out.gguf", outtype="q2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin-only", "empty"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tiny_model_dir, tmp_path, monkeypatch):
    import assistant.gguf_convert as gc

    out = tmp_path / "model.gguf"
    out.write_bytes(b"previous")

    def boom(*args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(gc, "rope_permute", boom)  # fails mid-way, after the header is written
    with pytest.raises(RuntimeError, match="disk on fire"):
        convert_folder_to_gguf(tiny_model_dir, out, outtype="f32")
    assert out.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["model.gguf"]


def test_quantize_without_llama_cpp_is_a_clear_error(tiny_f32, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now raises ImportError
    with pytest.raises(ModelError, match="needs llama-cpp-python"):
        quantize_gguf(tiny_f32, tmp_path / "q.gguf", "q8_0")
    with pytest.raises(ModelError, match="does not exist"):
        quantize_gguf(tmp_path / "none.gguf", tmp_path / "q.gguf", "q8_0")
    with pytest.raises(ModelError, match="Unknown quantization"):
        quantize_gguf(tiny_f32, tmp_path / "q.gguf", "q3_xs")
    assert list(tmp_path.iterdir()) == []


# ---- llama.cpp computes what transformers computes ---------------------------------------------------


def test_tiny_llama_logits_match_transformers(tiny_model_dir, tiny_f32):
    pytest.importorskip("llama_cpp", reason=NO_LLAMA_CPP)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    for ids in token_ids(tiny_model_dir):
        assert_same_logits(llama_logits(tiny_f32, ids), hf_logits(model, ids), tol=1e-4)


@pytest.mark.parametrize("kind", ["qwen2", "llama3"])
def test_qwen2_and_llama3_rope_logits_match_transformers(kind, tiny_model_dir, tmp_path):
    pytest.importorskip("llama_cpp", reason=NO_LLAMA_CPP)
    from transformers import AutoModelForCausalLM

    folder = variant_model(tiny_model_dir, tmp_path / kind, kind)
    path = convert_folder_to_gguf(folder, tmp_path / f"{kind}.gguf", outtype="f32")
    fields, tensors = read_gguf(path)
    assert fields["general.architecture"] == ("qwen2" if kind == "qwen2" else "llama")
    assert "output.weight" in tensors and "blk.0.attn_q.bias" in tensors
    assert ("rope_freqs.weight" in tensors) == (kind == "llama3")
    if kind == "qwen2":  # one token per embedding row: the rows no token uses are UNUSED pads
        assert fields["tokenizer.ggml.tokens"][-1] == "[PAD415]" and fields["tokenizer.ggml.token_type"][-1] == 5
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    for ids in token_ids(folder):
        assert_same_logits(llama_logits(path, ids), hf_logits(model, ids), tol=1e-4)


def test_f16_and_q8_0_stay_close(tiny_model_dir, tmp_path):
    # measured: max diff ~2e-4 (f16) and ~6e-3 (q8_0) on logits of ~0.8, top-2 gaps >= 0.047
    pytest.importorskip("llama_cpp", reason=NO_LLAMA_CPP)
    from transformers import AutoModelForCausalLM

    f16 = convert_folder_to_gguf(tiny_model_dir, tmp_path / "m-f16.gguf", outtype="f16")
    q8 = convert_folder_to_gguf(tiny_model_dir, tmp_path / "m-q8.gguf", outtype="q8_0")
    assert read_gguf(q8)[1]["blk.0.attn_q.weight"].tensor_type.name == "Q8_0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-f16.gguf", "m-q8.gguf"]  # no f16 left over
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    for ids in token_ids(tiny_model_dir):
        want = hf_logits(model, ids)
        assert_same_logits(llama_logits(f16, ids), want, tol=2e-3)
        assert_same_logits(llama_logits(q8, ids), want, tol=3e-2)


def test_quantize_gguf_kinds_and_failure_reason(tiny_f32, tmp_path):
    pytest.importorskip("llama_cpp", reason=NO_LLAMA_CPP)
    for kind, tensor_type in [("q8_0", "Q8_0"), ("q4_0", "Q4_0"), ("f16", "F16")]:
        out = quantize_gguf(tiny_f32, tmp_path / f"{kind}.gguf", kind)
        assert read_gguf(out)[1]["blk.1.ffn_up.weight"].tensor_type.name == tensor_type
    # q4_k_m needs rows of 256: the tiny model's 32-wide rows fall back to another type, but load
    out = quantize_gguf(tiny_f32, tmp_path / "q4_k_m.gguf", "q4_k_m")
    assert llama_logits(out, [5, 6, 7]).shape == (3, 400)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelError, match="llama.cpp could not quantize .*bad.gguf to q8_0: .*invalid magic"):
        quantize_gguf(bad, tmp_path / "never.gguf", "q8_0")
    assert not (tmp_path / "never.gguf").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ---- the real default model --------------------------------------------------------------------------


def real_f16(real_model, tmp_path_factory) -> Path:
    """The default model as f16 GGUF, converted once per session (test_gguf_lora shares it)."""
    path = tmp_path_factory.getbasetemp() / "gguf-real" / "SmolLM2-135M-Instruct-f16.gguf"
    if not path.exists():
        convert_folder_to_gguf(real_model.path, path, outtype="f16")
    return path


def greedy_llama(path: Path, ids: list[int], n: int) -> list[int]:
    """n greedy tokens from llama.cpp with its default (f16) KV cache, as the engine runs it."""
    pytest.importorskip("llama_cpp", reason=NO_LLAMA_CPP)
    llm = open_llama(model_path=str(path), n_ctx=512, logits_all=True, verbose=False, n_threads=1)
    try:
        llm.eval(ids)
        out: list[int] = []
        for _ in range(n):
            out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
            llm.eval([out[-1]])
        return out
    finally:
        llm.close()


@pytest.mark.real
def test_real_model_f16_greedy_matches_transformers(real_model, tmp_path_factory):
    pytest.importorskip("llama_cpp", reason=NO_LLAMA_CPP)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = real_f16(real_model, tmp_path_factory)
    fields, tensors = read_gguf(path)
    assert fields["tokenizer.ggml.pre"] == "smollm" and fields["tokenizer.ggml.add_bos_token"] is False
    assert tensors["blk.0.attn_q.weight"].tensor_type.name == "F16"
    tok = AutoTokenizer.from_pretrained(real_model.path)
    model = AutoModelForCausalLM.from_pretrained(real_model.path).eval()
    for question in ["Write a short poem about the sea.", "Explain how a bicycle works."]:
        text = tok.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        ids = tok(text, add_special_tokens=False).input_ids
        got = greedy_llama(path, ids, 20)
        # Greedy agreement checked in one forward pass: each llama.cpp token must be transformers'
        # argmax after the tokens before it, which is what transformers' own greedy loop does.
        # (Not generate(): transformers 5.24's cached decoding drifts from its full forward by up
        # to ~0.15 logits and picked other tokens at near-ties on 3 of 5 prompts tried, while
        # llama.cpp matched the full forward on all 5.)
        want = hf_logits(model, ids + got)[len(ids) - 1 : -1].argmax(-1).tolist()
        assert got == want, f"{question!r}: llama.cpp {tok.decode(got)!r} vs transformers {tok.decode(want)!r}"
