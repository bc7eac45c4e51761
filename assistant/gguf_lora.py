"""PEFT LoRA adapter folder -> llama.cpp's GGUF LoRA file (`adapter.gguf` beside the adapter).

This module owns the export of a tuned adapter for llama.cpp: `convert_lora_to_gguf` writes one
file, `ensure_lora_gguf` keeps `<adapter>/adapter.gguf` up to date with the adapter (once, under
a file lock, so two processes never race on it). The base model is exported by gguf_convert.py;
the adapter file must be applied to a GGUF of that same base.

Format facts verified against llama.cpp (vendored in llama-cpp-python 0.3.36, src/llama-adapter.cpp
and llama-graph.cpp) and by the tests, which compare PEFT's logits with llama.cpp's:

- Metadata: general.architecture equal to the base file's ("llama", "qwen2"; llama.cpp refuses a
  mismatch), general.type = "adapter", adapter.type = "lora", adapter.lora.alpha (float32).
- Tensors: for a base weight `blk.3.attn_q.weight`, `blk.3.attn_q.weight.lora_a` holds PEFT's
  lora_A (torch shape (r, in), GGUF ne = [in, r]) and `.lora_b` holds lora_B ((out, r),
  ne = [r, out]). Written in f32: adapters are small, and it keeps the comparison exact.
- Scaling: llama.cpp adds scale * B(A x) with scale = user_scale * alpha / r, where r is read
  from each lora_b's shape (ne[0]) and alpha is the one file-wide adapter.lora.alpha (alpha 0
  means scale = user_scale). PEFT adds (alpha / r) B(A x) per module (alpha / sqrt(r) with
  rsLoRA; r and alpha per module with rank_pattern / alpha_pattern). We store PEFT's lora_alpha
  and multiply each module's B by PEFT's scale / llama.cpp's scale, which is exactly 1 for a
  plain adapter (B written bit for bit) and makes rsLoRA and per-module alphas exact too.
- Rope layout: for the llama architecture the base converter permutes the output rows of q_proj
  and k_proj (see gguf_convert.rope_permute); since (P W) x = P (W x) and the LoRA delta is
  B A, the same permutation applies to lora_B's rows (out) and lora_A is unchanged.
- Not representable, so refused: DoRA (a magnitude vector), LoRA on embed_tokens / lm_head
  (the tied output has no tensor of its own), trained biases, modules_to_save, trainable tokens.
"""

from __future__ import annotations

import fcntl
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError
from .gguf_convert import arch_spec, atomic_path, qk_heads, read_config, read_json_object, rope_permute

log = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
SUPPORTED_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

_TENSOR = re.compile(
    r"^base_model\.model\.(?P<module>model\.layers\.(?P<layer>\d+)\.(?:self_attn|mlp)\.(?P<proj>\w+))"
    r"\.lora_(?P<ab>[AB])\.weight$"
)


def lora_gguf_path(adapter_dir: Path) -> Path:
    """Where the GGUF form of an adapter lives: `adapter.gguf` inside the adapter folder."""
    return Path(adapter_dir) / "adapter.gguf"


def _read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    return read_json_object(adapter_dir, ADAPTER_CONFIG, "Adapter folder", "PEFT adapter folder")


def _refuse_unsupported(config: dict[str, Any], adapter_dir: Path) -> None:
    """Options whose effect the GGUF LoRA format cannot carry."""
    why = f"Cannot export the adapter {adapter_dir} to GGUF"
    if config.get("peft_type", "LORA") != "LORA":
        raise ModelError(f"{why}: it is a {config.get('peft_type')} adapter; only LoRA is supported.")
    if config.get("use_dora"):
        raise ModelError(f"{why}: DoRA (use_dora) adapters are not supported by llama.cpp; train a plain LoRA.")
    if config.get("bias", "none") != "none" or config.get("lora_bias"):
        raise ModelError(f"{why}: it trains biases (bias / lora_bias), which llama.cpp's LoRA format cannot hold.")
    if config.get("modules_to_save") or config.get("trainable_token_indices"):
        raise ModelError(
            f"{why}: it saves whole modules or trained tokens (modules_to_save / trainable_token_indices); "
            "only LoRA matrices on the projections can be exported."
        )
    if config.get("fan_in_fan_out") or config.get("layer_replication") or config.get("target_parameters"):
        raise ModelError(f"{why}: fan_in_fan_out, layer_replication and target_parameters are not supported.")
    if config.get("alora_invocation_tokens") or config.get("invocation_string"):
        raise ModelError(f"{why}: activated LoRA (aLoRA) adapters are not supported.")
    # LoRA variants whose forward pass is not x + scale * B(A x)
    variants = ("use_qalora", "use_bdlora", "velora_config", "monteclora_config", "arrow_config", "kasa_config")
    used = [key for key in variants if config.get(key)]
    if used:
        raise ModelError(f"{why}: LoRA variants ({', '.join(used)}) are not supported; only plain LoRA is.")


def _peft_scale(config: dict[str, Any], module: str, rank: int) -> float:
    """The factor PEFT multiplies this module's B A by (LoraLayer.update_layer)."""
    alpha = float(config.get("lora_alpha", 8))
    pattern = config.get("alpha_pattern") or {}
    if pattern:
        from peft.utils.other import get_pattern_key  # PEFT's own matching, so patterns resolve as in PEFT

        alpha = float(pattern.get(get_pattern_key(list(pattern), module), alpha))
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _expected_shapes(base: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(out, in) of each projection of the base model, to tell a wrong base early and clearly."""
    hidden, ffn = int(base["hidden_size"]), int(base["intermediate_size"])
    n_head, n_kv = qk_heads(base)
    head_dim = int(base.get("head_dim") or hidden // n_head)
    return {
        "q_proj": (n_head * head_dim, hidden),
        "k_proj": (n_kv * head_dim, hidden),
        "v_proj": (n_kv * head_dim, hidden),
        "o_proj": (hidden, n_head * head_dim),
        "gate_proj": (ffn, hidden),
        "up_proj": (ffn, hidden),
        "down_proj": (hidden, ffn),
    }


def _unsupported_module_error(adapter_dir: Path, names: list[str]) -> ModelError:
    # "base_model.model.lm_head.lora_A.weight", "...embed_tokens.base_layer.weight" -> the module
    modules = sorted(
        {
            re.sub(r"\.(lora_\w+|base_layer)(\.\w+)*$|\.(weight|bias)$", "", n.removeprefix("base_model.model."))
            for n in names
        }
    )
    shown = ", ".join(modules[:6]) + (f" and {len(modules) - 6} more" if len(modules) > 6 else "")
    hint = ""
    if any("embed_tokens" in m or "lm_head" in m for m in modules):
        hint = " LoRA on embed_tokens / lm_head is not exported."
    return ModelError(
        f"Cannot export the adapter {adapter_dir} to GGUF: it adapts modules that are not supported: {shown}."
        f"{hint} Supported target modules: {', '.join(SUPPORTED_MODULES)}."
    )


def convert_lora_to_gguf(adapter_dir: Path, base_folder: Path, out: Path) -> Path:
    """Write the PEFT LoRA adapter in `adapter_dir` (adapter_config.json + adapter_model.safetensors),
    trained on the Hugging Face model in `base_folder`, as a llama.cpp GGUF LoRA file at `out`
    (atomic). Apply it to a GGUF of that base made by gguf_convert. Returns `out`.
    Raises ModelError for what the format cannot hold (see the module notes) or a wrong base."""
    import gguf
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    adapter_dir, base_folder, out = Path(adapter_dir), Path(base_folder), Path(out)
    config = _read_adapter_config(adapter_dir)
    _refuse_unsupported(config, adapter_dir)
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        extra = " (it has adapter_model.bin, which is not loaded: re-save with safetensors)"
        raise ModelError(
            f"{adapter_dir} has no {ADAPTER_WEIGHTS}"
            + (extra if (adapter_dir / "adapter_model.bin").exists() else "")
            + "."
        )
    base = read_config(base_folder)
    spec = arch_spec(base, base_folder)
    try:
        tensors = load_file(str(weights))
    except (OSError, SafetensorError) as exc:
        raise ModelError(f"Could not read the adapter weights {weights}: {exc}") from exc

    pairs: dict[str, dict[str, torch.Tensor]] = {}
    unsupported = []
    for name, tensor in tensors.items():
        match = _TENSOR.match(name)
        if match is None or match["proj"] not in SUPPORTED_MODULES:
            unsupported.append(name)
            continue
        pairs.setdefault(match["module"], {})[match["ab"]] = tensor
    if unsupported:
        raise _unsupported_module_error(adapter_dir, unsupported)
    if not pairs:
        raise ModelError(f"The adapter {adapter_dir} has no LoRA weights in {ADAPTER_WEIGHTS}.")

    n_layers = int(base["num_hidden_layers"])
    n_head, n_kv = qk_heads(base)
    shapes = _expected_shapes(base)
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == spec.gguf_arch)
    name_map = gguf.get_tensor_name_map(arch, n_layers)
    alpha = float(config.get("lora_alpha", 8))
    planned: list[tuple[str, np.ndarray]] = []
    for module in sorted(pairs, key=lambda m: (int(m.split(".")[2]), m)):
        ab = pairs[module]
        if set(ab) != {"A", "B"}:
            raise ModelError(f"The adapter {adapter_dir} is incomplete: {module} has lora_{''.join(ab)} only.")
        a = ab["A"].to(torch.float32).numpy()
        b = ab["B"].to(torch.float32).numpy()
        proj, layer = module.rsplit(".", 1)[1], int(module.split(".")[2])
        rank = a.shape[0]
        if layer >= n_layers or b.shape[1] != rank or (b.shape[0], a.shape[1]) != shapes[proj]:
            raise ModelError(
                f"The adapter {adapter_dir} does not fit the base model {base_folder}: {module} has "
                f"lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}, but the base's {proj} is "
                f"{shapes[proj][0]}x{shapes[proj][1]} in {n_layers} layers. Was it trained on another model?"
            )
        llama_scale = alpha / rank if alpha else 1.0
        fold = _peft_scale(config, module, rank) / llama_scale
        if fold != 1.0:
            b = b * np.float32(fold)
        if spec.permute_qk and proj in ("q_proj", "k_proj"):
            b = rope_permute(b, n_head if proj == "q_proj" else n_kv)
        target = name_map.get_name(module)
        assert target is not None  # every (layer, projection) matched above has a llama/qwen2 name
        planned.append((f"{target}.weight.lora_a", np.ascontiguousarray(a)))
        planned.append((f"{target}.weight.lora_b", np.ascontiguousarray(b)))

    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(tmp, spec.gguf_arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_name(adapter_dir.name)
        writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
        for name, array in planned:
            writer.add_tensor(name, array)
        try:
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    log.info("Wrote the GGUF LoRA %s (%d modules, alpha %g)", out, len(planned) // 2, alpha)
    return out


def _is_fresh(target: Path, adapter_dir: Path) -> bool:
    if not target.is_file():
        return False
    sources = [adapter_dir / ADAPTER_WEIGHTS, adapter_dir / ADAPTER_CONFIG]
    newest = max((p.stat().st_mtime_ns for p in sources if p.exists()), default=0)
    return target.stat().st_mtime_ns >= newest


def ensure_lora_gguf(adapter_dir: Path, base_folder: Path) -> Path:
    """`lora_gguf_path(adapter_dir)`, converted now if it is missing or older than the adapter's
    weights or config. A file lock beside it makes a second process wait for the first
    conversion and then reuse it, instead of converting again at the same time."""
    adapter_dir = Path(adapter_dir)
    target = lora_gguf_path(adapter_dir)
    if _is_fresh(target, adapter_dir):
        return target
    if not (adapter_dir / ADAPTER_WEIGHTS).is_file():
        _read_adapter_config(adapter_dir)  # the clearer error when the folder or its config is missing
        raise ModelError(f"{adapter_dir} has no {ADAPTER_WEIGHTS}.")
    try:
        lock = open(adapter_dir / f".{target.name}.lock", "w")
    except OSError as exc:
        raise ModelError(f"Cannot export the adapter {adapter_dir}: its folder is not writable ({exc}).") from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_fresh(target, adapter_dir):  # another process converted it while we waited
            return target
        return convert_lora_to_gguf(adapter_dir, base_folder, target)
