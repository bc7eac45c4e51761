"""Hugging Face model folder -> GGUF file for llama.cpp, and GGUF -> quantized GGUF.

This module owns the export of a chat model to llama.cpp's format: `convert_folder_to_gguf`
writes the weights, the hyperparameters and the tokenizer metadata of a folder saved with
`save_pretrained` (config.json, tokenizer.json, *.safetensors; pickled *.bin is never loaded);
`quantize_gguf` re-encodes a GGUF file through llama.cpp's own quantizer. Both write under a
temporary name beside the target and rename into place, so a crash never leaves half a file
where llama.cpp (or Ollama) would read it. `gguf_lora.py` reuses the architecture table, the
rope permutation and the atomic write from here.

Format facts verified against llama.cpp (the copy vendored in llama-cpp-python 0.3.36) and by
the tests, which compare llama.cpp's logits with transformers':

- Tensor names come from gguf's TensorNameMap (`model.layers.3.self_attn.q_proj.weight` ->
  `blk.3.attn_q.weight`). GGUF lists dimensions innermost first, so a torch (out, in) matrix is
  stored as ne = [in, out]; GGUFWriter does that reversal itself.
- Rope layout. HF Llama rotates the pairs (x[i], x[i + d/2]) inside each head of size d
  (`rotate_half`); llama.cpp's `llama` architecture uses ggml's NORM rope, which rotates the
  adjacent pairs (x[2i], x[2i+1]). So the output rows of q_proj (per attention head) and of
  k_proj (per key/value head) are reordered: within each head, row i -> 2i, row i + d/2 -> 2i+1
  (`rope_permute`). Qwen2 in llama.cpp uses NEOX rope, which is HF's layout: no permutation.
- Tied embeddings (`tie_word_embeddings`): no output.weight tensor; llama.cpp then reuses
  token_embd.weight for the output projection.
- Llama 3's `rope_type: llama3` becomes a `rope_freqs.weight` tensor of per-frequency divisors
  (head_dim / 2 values, f32); `linear` becomes rope.scaling.type/factor; others are refused.
- Tokenizer: byte-level BPE only (tokenizer.ggml.model "gpt2"). The tokens are tokenizer.json's
  vocabulary strings as they are (byte-level encoded, "Ġ" for a space); added tokens keep their
  raw text and are typed CONTROL when special (or shaped like `<|...|>`), else USER_DEFINED;
  ids the tokenizer does not use (a model's vocab padded to a round size) are `[PAD<i>]`,
  UNUSED, because llama.cpp needs one token per embedding row. tokenizer.ggml.pre picks
  llama.cpp's pre-tokenizer regex and is read from tokenizer.json's pre_tokenizer (see
  `detect_pre_tokenizer`).
- 1-D tensors (norms, biases, rope_freqs) stay f32 in an f16 file, as llama.cpp's own converter
  does; "q8_0" is written as f16 and then quantized by llama.cpp.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import math
import os
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError, write_failed
from .llamacpp_params import route_llama_log

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ArchSpec:
    gguf_arch: str  # general.architecture in the GGUF file ("llama", "qwen2")
    permute_qk: bool  # HF rotate-half rope -> ggml NORM rope needs the q/k row permutation
    examples: str  # what users know this architecture as (for error messages)


# Hugging Face `architectures[0]` -> how it is written for llama.cpp.
SUPPORTED_ARCHITECTURES: dict[str, ArchSpec] = {
    "LlamaForCausalLM": ArchSpec("llama", True, "SmolLM2, TinyLlama, Llama 3.x"),
    "Qwen2ForCausalLM": ArchSpec("qwen2", False, "Qwen2, Qwen2.5"),
}

OUTTYPES = ("f32", "f16", "q8_0")

# tokenizer.json Split patterns of the two families whose llama.cpp pre-tokenizers we name.
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def supported_text() -> str:
    return "; ".join(f"{name} ({spec.examples})" for name, spec in SUPPORTED_ARCHITECTURES.items())


def read_json_object(folder: Path, name: str, label: str, kind: str) -> dict[str, Any]:
    """`folder/name` as a JSON object, with a ModelError that says what is missing. `label` and
    `kind` name the folder in the messages ("Model folder" / "model folder")."""
    folder = Path(folder)
    path = folder / name
    if not folder.is_dir():
        raise ModelError(f"{label} {folder} does not exist.")
    if not path.is_file():
        raise ModelError(f"{folder} is not a {kind}: it has no {name}.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"Could not read {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelError(f"{path} is not a JSON object.")
    return config


def read_config(folder: Path) -> dict[str, Any]:
    """config.json of a model folder."""
    return read_json_object(folder, "config.json", "Model folder", "model folder")


def arch_spec(config: dict[str, Any], where: Path | str) -> ArchSpec:
    """The supported architecture of a model config, or a ModelError naming what is supported."""
    archs = config.get("architectures") or []
    name = archs[0] if archs else config.get("model_type", "unknown")
    spec = SUPPORTED_ARCHITECTURES.get(name)
    if spec is None:
        raise ModelError(
            f"Cannot export {where} to GGUF: architecture {name!r} is not supported. Supported: {supported_text()}."
        )
    return spec


def rope_permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the output rows (axis 0) of a q or k projection for ggml's NORM rope.

    `rows` is a weight (out, in), a bias (out,) or a LoRA B matrix (out, r); out = n_head * d.
    Within each head, HF's row i goes to 2i and row i + d/2 to 2i + 1 (see the module notes)."""
    out_dim = rows.shape[0]
    if out_dim % n_head or (out_dim // n_head) % 2:
        raise ModelError(f"Cannot split {out_dim} rows into {n_head} rope heads of even size.")
    half = out_dim // n_head // 2
    # (head, which half, i, ...) -> (head, i, which half, ...): the two halves interleave
    return rows.reshape(n_head, 2, half, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def qk_heads(config: dict[str, Any]) -> tuple[int, int]:
    """(attention heads, key/value heads) of a config."""
    n_head = int(config["num_attention_heads"])
    return n_head, int(config.get("num_key_value_heads") or n_head)


# ---- atomic output ---------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(out: Path) -> Iterator[Path]:
    """Yield a temporary path beside `out`; when the block succeeds, fsync it and rename it to
    `out`. On any error the temporary file is removed and `out` is left as it was. An OSError
    (disk full, read-only folder) becomes a StorageError that names `out`."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # os.open rather than mkstemp: mkstemp makes the file 0600, and the published file
        # should have the usual permissions (0666 less the umask), e.g. for an Ollama service.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise write_failed(out, exc) from exc
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_failed(out, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---- weights ----------------------------------------------------------------------------------------


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"Could not read {index}: {exc}") from exc
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelError(f"{folder} is missing weight files listed in {index.name}: {', '.join(missing)}.")
        return files
    files = sorted(p for p in folder.glob("*.safetensors") if p.name != "adapter_model.safetensors")
    if not files:
        if any(folder.glob("*.bin")):
            raise ModelError(
                f"{folder} has only PyTorch *.bin weights; they are not loaded (pickle can run code). "
                "Re-save the model with safetensors (save_pretrained(..., safe_serialization=True))."
            )
        raise ModelError(f"{folder} has no *.safetensors weights.")
    return files


def _rope_parameters(config: dict[str, Any]) -> dict[str, Any]:
    """transformers 5 writes `rope_parameters`; older configs have `rope_theta` + `rope_scaling`."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    if "rope_type" not in params and "type" in params:
        params["rope_type"] = params["type"]
    if "rope_theta" not in params and config.get("rope_theta") is not None:
        params["rope_theta"] = config["rope_theta"]
    return params


def _head_dim(config: dict[str, Any]) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def _llama3_rope_factors(config: dict[str, Any], rope: dict[str, Any]) -> np.ndarray:
    """Llama 3.1+'s frequency scaling as llama.cpp's rope_freqs tensor: one divisor per rotary
    frequency. transformers divides long wavelengths' inverse frequencies by `factor`, keeps short
    ones and blends in between; llama.cpp divides each frequency by the value given here."""
    dim = _head_dim(config)
    theta = float(rope.get("rope_theta", 10000.0))
    factor = float(rope.get("factor", 8.0))
    low = float(rope.get("low_freq_factor", 1.0))
    high = float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    inv_freq = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_ctx / wavelen - low) / (high - low)
    blended = 1.0 / ((1 - smooth) / factor + smooth)
    divisors = np.where(wavelen < old_ctx / high, 1.0, np.where(wavelen > old_ctx / low, factor, blended))
    return divisors.astype(np.float32)


def _check_supported_config(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Refuse what the writer would silently get wrong; return the rope parameters."""
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise ModelError(f"Cannot export {folder} to GGUF: activation {act!r} is not supported (only silu).")
    if config.get("use_sliding_window"):
        raise ModelError(f"Cannot export {folder} to GGUF: sliding-window attention is not supported.")
    rope = _rope_parameters(config)
    rope_type = rope.get("rope_type") or "default"
    if rope_type not in ("default", "linear", "llama3"):
        raise ModelError(
            f"Cannot export {folder} to GGUF: rope scaling {rope_type!r} is not supported (default, linear, llama3)."
        )
    return rope


def _add_hparams(writer: Any, config: dict[str, Any], rope: dict[str, Any], vocab_size: int, name: str) -> None:
    import gguf

    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    n_head, n_kv = qk_heads(config)
    writer.add_context_length(int(config.get("max_position_embeddings") or 2048))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
    writer.add_rope_dimension_count(_head_dim(config))
    if config.get("head_dim"):
        writer.add_key_length(int(config["head_dim"]))
        writer.add_value_length(int(config["head_dim"]))
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_vocab_size(vocab_size)


# ---- tokenizer --------------------------------------------------------------------------------------


def _pre_tokenizer_steps(tokenizer_json: dict[str, Any]) -> list[dict[str, Any]]:
    pre = tokenizer_json.get("pre_tokenizer") or {}
    return list(pre.get("pretokenizers") or []) if pre.get("type") == "Sequence" else [pre] if pre else []


def _byte_decoder() -> dict[str, int]:
    from gguf.vocab import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


def _digits_always_alone(vocab: dict[str, int]) -> bool:
    """True when no token holds a digit next to anything else: such a vocabulary was trained with
    digits split one by one (SmolLM's Digits pre-tokenizer), and splitting them first changes
    nothing for it, whether or not its tokenizer.json still says so (a folder converted back
    from GGUF by transformers has lost that step)."""
    decoder = _byte_decoder()
    for token in vocab:
        if len(token) < 2 or not all(c in decoder for c in token):
            continue
        text = bytes(decoder[c] for c in token).decode("utf-8", errors="replace")
        if len(text) > 1 and any(unicodedata.category(c).startswith("N") for c in text):
            return False
    return True


def detect_pre_tokenizer(tokenizer_json: dict[str, Any]) -> str:
    """tokenizer.ggml.pre for a byte-level BPE tokenizer.json: which regex llama.cpp splits text
    with before BPE. "llama-bpe" and "qwen2" are recognised by their Split pattern; "smollm"
    (digits one by one, then GPT-2's regex) by a Digits step or a vocabulary without multi-digit
    tokens; a plain GPT-2 ByteLevel is "gpt-2"; anything else is "default" (with a warning)."""
    steps = _pre_tokenizer_steps(tokenizer_json)
    kinds = [s.get("type") for s in steps]
    if kinds == ["Split", "ByteLevel"] and steps[1].get("use_regex") is False:
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        if pattern == _LLAMA3_REGEX:
            return "llama-bpe"
        if pattern == _QWEN2_REGEX:
            return "qwen2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True) and not steps[0].get("add_prefix_space"):
        vocab = (tokenizer_json.get("model") or {}).get("vocab") or {}
        return "smollm" if _digits_always_alone(vocab) else "gpt-2"
    log.warning("Unrecognised pre-tokenizer %s: writing tokenizer.ggml.pre='default'", kinds)
    return "default"


def _looks_special(text: str) -> bool:
    return (text.startswith("<|") and text.endswith("|>")) or (text.startswith("<｜") and text.endswith("｜>"))


def _add_tokenizer(writer: Any, folder: Path, vocab_size: int) -> None:
    import gguf

    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ModelError(
            f"Cannot export {folder} to GGUF: it has no tokenizer.json. Supported tokenizers: byte-level BPE "
            "(tokenizer.json, as SmolLM2, Qwen2.5 and Llama 3 ship)."
        )
    try:
        tokenizer_json = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"Could not read {path}: {exc}") from exc
    model = tokenizer_json.get("model") or {}
    byte_level = any(s.get("type") == "ByteLevel" for s in _pre_tokenizer_steps(tokenizer_json))
    if model.get("type") != "BPE" or model.get("byte_fallback") or not byte_level:
        kind = "SentencePiece-style BPE" if model.get("byte_fallback") else model.get("type", "unknown")
        raise ModelError(
            f"Cannot export {folder} to GGUF: its tokenizer ({kind}) is not supported. Supported tokenizers: "
            "byte-level BPE (as SmolLM2, Qwen2.5 and Llama 3 ship); SentencePiece tokenizers (TinyLlama, Llama 2) "
            "are not."
        )

    tokens: list[str | None] = [None] * vocab_size
    types = [int(gguf.TokenType.NORMAL)] * vocab_size
    for text, token_id in model.get("vocab", {}).items():
        if token_id >= vocab_size:
            raise ModelError(f"{path}: token id {token_id} is outside the model's vocabulary of {vocab_size}.")
        tokens[token_id] = text
    for added in tokenizer_json.get("added_tokens") or []:
        token_id, text = int(added["id"]), str(added["content"])
        if token_id >= vocab_size:
            raise ModelError(f"{path}: added token {text!r} (id {token_id}) is outside the vocabulary of {vocab_size}.")
        tokens[token_id] = text  # raw text: llama.cpp matches CONTROL/USER_DEFINED tokens unencoded
        special = added.get("special") or _looks_special(text)
        types[token_id] = int(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
    for i, text in enumerate(tokens):
        if text is None:  # an embedding row no token uses (vocab padded to a round size)
            tokens[i] = f"[PAD{i}]"
            types[i] = int(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(detect_pre_tokenizer(tokenizer_json))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    _add_special_tokens(writer, folder, read_config(folder))


def _config_token_id(config: dict[str, Any], key: str) -> int | None:
    value = config.get(key)
    if isinstance(value, list):  # generation-style lists of stop ids: the first is the main one
        value = value[0] if value else None
    return int(value) if isinstance(value, int) else None


def _add_special_tokens(writer: Any, folder: Path, config: dict[str, Any]) -> None:
    """bos/eos/pad/unk ids, whether encoding adds bos/eos, and the chat template, as the folder's
    transformers tokenizer has them (tokenizer_config.json, chat_template.jinja, config.json)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # any loader failure is "this tokenizer cannot be read"
        raise ModelError(f"Could not load the tokenizer of {folder}: {exc}") from exc
    # A tokenizer without a bos token (Qwen2.5) still has one in config.json; without any id
    # llama.cpp would assume its BPE default, token 11, so write the model's own.
    bos = tok.bos_token_id if tok.bos_token_id is not None else _config_token_id(config, "bos_token_id")
    eos = tok.eos_token_id if tok.eos_token_id is not None else _config_token_id(config, "eos_token_id")
    if bos is not None:
        writer.add_bos_token_id(bos)
    if eos is not None:
        writer.add_eos_token_id(eos)
    if tok.pad_token_id is not None:
        writer.add_pad_token_id(tok.pad_token_id)
    if tok.unk_token_id is not None:
        writer.add_unk_token_id(tok.unk_token_id)
    # Read the behaviour rather than flags: whether encoding adds bos/eos is decided by the
    # tokenizer's post-processor, which tokenizer_config's add_bos_token may not describe.
    with_special = tok("a b").input_ids
    plain = tok("a b", add_special_tokens=False).input_ids
    writer.add_add_bos_token(with_special[:1] != plain[:1] and with_special[:1] == [bos])
    writer.add_add_eos_token(with_special[-1:] != plain[-1:] and with_special[-1:] == [eos])
    template = tok.chat_template
    if isinstance(template, dict):
        writer.add_chat_template([{"name": k, "template": v} for k, v in template.items()])
    elif template:
        writer.add_chat_template(template)


# ---- conversion -------------------------------------------------------------------------------------


@dataclass
class _Planned:
    gguf_name: str
    source: Path | None  # safetensors file; None for a computed tensor
    hf_name: str
    shape: tuple[int, ...]
    dtype: Any  # numpy dtype written
    permute_heads: int = 0  # rope_permute with this many heads (0: none)
    data: np.ndarray | None = None  # computed tensors (rope_freqs)


def _plan_tensors(
    folder: Path, config: dict[str, Any], spec: ArchSpec, rope: dict[str, Any], outtype: str
) -> list[_Planned]:
    import gguf
    from safetensors import safe_open

    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == spec.gguf_arch)
    name_map = gguf.get_tensor_name_map(arch, int(config["num_hidden_layers"]))
    n_head, n_kv = qk_heads(config)
    tied = bool(config.get("tie_word_embeddings", False))
    plan: list[_Planned] = []
    if rope.get("rope_type") == "llama3":
        factors = _llama3_rope_factors(config, rope)
        plan.append(_Planned("rope_freqs.weight", None, "", factors.shape, np.float32, data=factors))
    seen: set[str] = set()
    for file in _weight_files(folder):
        try:
            with safe_open(str(file), framework="pt") as f:
                names = list(f.keys())
                shapes = {n: tuple(f.get_slice(n).get_shape()) for n in names}
        except Exception as exc:  # safetensors raises its own error types for bad files
            raise ModelError(f"Could not read the weights {file}: {exc}") from exc
        for hf_name in names:
            if hf_name.endswith("rotary_emb.inv_freq"):
                continue  # a buffer some checkpoints carry; llama.cpp computes it
            if hf_name == "lm_head.weight" and tied:
                continue
            if hf_name in seen:
                raise ModelError(f"{folder}: tensor {hf_name} appears in more than one weight file.")
            seen.add(hf_name)
            gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise ModelError(
                    f"Cannot export {folder} to GGUF: tensor {hf_name!r} has no place in llama.cpp's "
                    f"{spec.gguf_arch} architecture (only plain {supported_text()} models are supported)."
                )
            shape = shapes[hf_name]
            dtype = np.float16 if outtype == "f16" and len(shape) >= 2 else np.float32
            heads = 0
            if spec.permute_qk and re.search(r"\.self_attn\.q_proj\.(weight|bias)$", hf_name):
                heads = n_head
            elif spec.permute_qk and re.search(r"\.self_attn\.k_proj\.(weight|bias)$", hf_name):
                heads = n_kv
            plan.append(_Planned(gguf_name, file, hf_name, shape, dtype, heads))
    if "model.embed_tokens.weight" not in seen:
        raise ModelError(f"{folder}: the weights have no model.embed_tokens.weight.")
    if not tied and "lm_head.weight" not in seen:
        raise ModelError(f"{folder}: tie_word_embeddings is false but the weights have no lm_head.weight.")
    return plan


def _write_gguf(folder: Path, path: Path, outtype: str, progress: Progress) -> None:
    import gguf
    import torch
    from safetensors import safe_open

    config = read_config(folder)
    spec = arch_spec(config, folder)
    rope = _check_supported_config(config, folder)
    plan = _plan_tensors(folder, config, spec, rope, outtype)
    vocab_size = next(p.shape[0] for p in plan if p.gguf_name == "token_embd.weight")
    if int(config.get("vocab_size") or vocab_size) != vocab_size:
        raise ModelError(f"{folder}: config vocab_size {config['vocab_size']} != embedding rows {vocab_size}.")

    writer = gguf.GGUFWriter(path, spec.gguf_arch)
    _add_hparams(writer, config, rope, vocab_size, folder.name)
    ftype = gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.ALL_F32
    writer.add_file_type(int(ftype))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, folder, vocab_size)
    for p in plan:
        nbytes = int(np.prod(p.shape)) * np.dtype(p.dtype).itemsize
        writer.add_tensor_info(p.gguf_name, p.shape, np.dtype(p.dtype), nbytes)
    # Header, metadata and tensor index first, then one tensor at a time: memory stays at one
    # tensor, not the whole model (GGUFWriter.add_tensor would hold every array until the end).
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    handles: dict[Path, Any] = {}
    try:
        for i, p in enumerate(plan):
            if p.data is not None:
                array = p.data
            else:
                assert p.source is not None
                if p.source not in handles:
                    handles[p.source] = safe_open(str(p.source), framework="pt")
                array = handles[p.source].get_tensor(p.hf_name).to(torch.float32).numpy()
                if p.permute_heads:
                    array = rope_permute(array, p.permute_heads)
            writer.write_tensor_data(np.ascontiguousarray(array, dtype=p.dtype))
            if i % 50 == 49:
                progress(f"  {i + 1}/{len(plan)} tensors written")
    finally:
        handles.clear()
        writer.close()


def convert_folder_to_gguf(folder: Path, out: Path, *, outtype: str = "f16", progress: Progress = log.info) -> Path:
    """Write the model in `folder` (a Hugging Face folder: config.json, tokenizer.json,
    *.safetensors) as a GGUF file at `out` that llama.cpp loads, in `outtype` "f32", "f16" or
    "q8_0". Atomic: `out` appears complete or not at all. Returns `out`.
    Raises ModelError (unsupported architecture or tokenizer, missing files) or StorageError."""
    folder, out = Path(folder), Path(out)
    if outtype not in OUTTYPES:
        raise ModelError(f"Unknown GGUF output type {outtype!r}; choose one of {', '.join(OUTTYPES)}.")
    progress(f"Converting {folder} to GGUF ({outtype}) at {out}...")
    with atomic_path(out) as tmp:
        if outtype == "q8_0":
            f16 = tmp.with_name(tmp.name + ".f16")
            try:
                _write_gguf(folder, f16, "f16", progress)
                _quantize(f16, tmp, "q8_0", threads=0)
            finally:
                f16.unlink(missing_ok=True)
        else:
            _write_gguf(folder, tmp, outtype, progress)
    progress(f"Wrote {out} ({out.stat().st_size / 1e6:.1f} MB).")
    return out


# ---- quantization -----------------------------------------------------------------------------------

QUANT_KINDS = ("q8_0", "q4_k_m", "q4_0", "f16", "f32")

_log_lines: list[tuple[int, str]] = []


def _collect_log(level: int, text: bytes, user_data: Any) -> None:
    _log_lines.append((level, text.decode("utf-8", errors="replace")))


_log_callback: Any = None  # the ctypes callback object, kept alive while llama.cpp may call it


def quantize_gguf(src: Path, dst: Path, kind: str, *, threads: int = 0) -> Path:
    """Re-encode the GGUF model `src` as `kind` ("q8_0", "q4_k_m", "q4_0", "f16", "f32") at `dst` with
    llama.cpp's quantizer (llama_model_quantize; `threads` 0 = all cores). Atomic; returns `dst`.
    Raises ModelError when llama-cpp-python is missing or llama.cpp refuses, with its reason."""
    src, dst = Path(src), Path(dst)
    if kind not in QUANT_KINDS:
        raise ModelError(f"Unknown quantization {kind!r}; choose one of {', '.join(QUANT_KINDS)}.")
    if not src.is_file():
        raise ModelError(f"GGUF file {src} does not exist.")
    _llama_cpp()  # fail before a temporary file is made
    with atomic_path(dst) as tmp:
        _quantize(src, tmp, kind, threads=threads)
    return dst


def _llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ModelError(
            f"Quantizing needs llama-cpp-python, which is not installed ({exc}). "
            "Install it with `pip install llama-cpp-python`."
        ) from exc
    return llama_cpp


def _quantize(src: Path, dst: Path, kind: str, *, threads: int) -> None:
    """llama_model_quantize from `src` into the path `dst` (not atomic: callers give a temporary)."""
    global _log_callback
    llama_cpp = _llama_cpp()
    ftypes = {
        "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
        "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
        "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
        "f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
        "f32": llama_cpp.LLAMA_FTYPE_ALL_F32,
    }
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[kind]
    params.allow_requantize = True
    params.nthread = threads
    # llama.cpp reports why it failed only through its log: collect it for the error (which also
    # keeps its per-tensor chatter off stderr), then give the log back to llama-cpp-python.
    if _log_callback is None:
        _log_callback = llama_cpp.llama_log_callback(_collect_log)
    _log_lines.clear()
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
    try:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    finally:
        route_llama_log(llama_cpp)  # llama-cpp-python's printing, less the expected LoRA buffer warnings
    if rc != 0:
        # ggml_log_level ERROR is 4 here (it was 3 in older ggml): match the words too
        errors = [
            text.strip()
            for level, text in _log_lines
            if level == 4 or any(word in text.lower() for word in ("error", "fail", "invalid"))
        ]
        reason = "; ".join(dict.fromkeys(e for e in errors if e)) or f"llama_model_quantize returned {rc}"
        raise ModelError(f"llama.cpp could not quantize {src} to {kind}: {reason}")
