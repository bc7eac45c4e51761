"""The embedding model run by ONNX Runtime instead of torch, for the knowledge base's embedding
(documents in, queries), with the same vectors (largest difference ~2e-7, the same top 10 for
every demo question). Measured on 2 cores (benchmarks/retrieval.py): one query embeds in ~4 ms
instead of ~13 ms (sentence-transformers' own per-call overhead is most of those), which is
what a search waits for; batches run 1.0-1.4x torch's chunks/s when idle (both sorted by
length), and ~3x in one run on a machine loaded by other processes.

sentence-transformers' own `backend="onnx"` needs optimum-onnx, whose exporter (0.1.0) does not
import with transformers 5 (`transformers.modeling_utils.get_parameter_dtype` is gone), so the
transformer is exported here with `torch.onnx.export`, once per model, into the workspace's
model cache (offline, from the local weights), and sentence-transformers' mean pooling and
normalisation are done in numpy. Only models made of a transformer, mean pooling and
normalisation (MiniLM and most sentence-transformers models) take this path; others stay on torch."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np

from assistant.embeddings import Embedder

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
EXPORT_VERSION = 1  # bump when the exported graph changes, so old files are not reused


_import_lock = threading.Lock()


def onnx_installed() -> bool:
    """onnxruntime, and onnx (torch.onnx.export writes through it), can be imported; checked
    without importing onnxruntime (see `_import_onnxruntime`)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def _import_onnxruntime(private_dir: Path) -> Any:
    """Import onnxruntime with TMPDIR pointing at `private_dir`: on import it writes a session id
    file, `.ses`, readable by every user, into the temporary folder (1.32), and Tailor keeps
    nothing of its own in the shared one (tests/server/test_upload_hardening.py)."""
    if "onnxruntime" in sys.modules:
        return sys.modules["onnxruntime"]
    with _import_lock:
        private_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        before = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = str(private_dir)
        try:
            import onnxruntime

            return onnxruntime
        finally:
            if before is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = before


def _mean_pooling_model(embedder: Embedder) -> bool:
    """True when the model is Transformer -> mean Pooling (-> Normalize): what `encode` repeats."""
    modules = list(embedder.model)
    names = [type(m).__name__ for m in modules]
    if names[:2] != ["Transformer", "Pooling"] or any(n not in ("Normalize",) for n in names[2:]):
        return False
    pooling = modules[1]
    mode = getattr(pooling, "pooling_mode", None) or (
        "mean" if getattr(pooling, "pooling_mode_mean_tokens", False) else None
    )
    return mode == "mean"


def _hf_model(embedder: Embedder) -> Any:
    """The Hugging Face model inside sentence-transformers' Transformer module (typed loosely
    by torch's Module.__getitem__)."""
    return cast(Any, embedder.model[0]).auto_model


def fingerprint(embedder: Embedder) -> str:
    """Names the exported file: the model's config and a checksum of some of its weights, so a
    different (or re-tuned) model under the same name is exported again."""
    bert = _hf_model(embedder)
    h = hashlib.sha256(f"{EXPORT_VERSION}:{embedder.name}:{bert.config.to_json_string()}".encode())
    params = list(bert.parameters())
    for p in (params[0], params[len(params) // 2], params[-1]):
        h.update(p.detach().float().numpy().tobytes()[: 1 << 20])
    return h.hexdigest()[:16]


class OnnxEmbedder:
    """`encode` as Embedder's (L2-normalised float32 rows, progress after each batch), run by
    ONNX Runtime. Texts are embedded longest first so that each batch pads little."""

    def __init__(self, embedder: Embedder, cache_dir: Path, threads: int | None = None):
        ort = _import_onnxruntime(cache_dir)
        if not _mean_pooling_model(embedder):
            raise ValueError(f"{embedder.name} is not a transformer with mean pooling")
        self.embedder = embedder
        self.dim = embedder.dim
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(embedder.name).name)[:60]
        self.path = cache_dir / f"{safe}-{fingerprint(embedder)}.onnx"
        if not self.path.exists():
            self._export()
        options = ort.SessionOptions()
        threads = threads or _torch_threads()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self._lock = threading.Lock()

    def _export(self) -> None:
        import torch

        class Transformer(torch.nn.Module):  # positional inputs, the last hidden state out
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.model(
                    input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
                ).last_hidden_state

        bert = _hf_model(self.embedder).eval()
        sample = self.embedder.tokenizer(["a b", "c d e"], padding=True, return_tensors="pt")
        if "token_type_ids" not in sample:
            raise ValueError(f"{self.embedder.name}'s tokenizer gives no token_type_ids")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        try:
            # the TorchScript exporter warns that it is deprecated and traces with warnings of
            # its own; neither concerns the user (the result is checked against torch in tests)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    Transformer(bert),
                    tuple(sample[k] for k in INPUTS),
                    tmp,
                    input_names=list(INPUTS),
                    output_names=["last_hidden_state"],
                    dynamic_axes={k: {0: "batch", 1: "tokens"} for k in [*INPUTS, "last_hidden_state"]},
                    opset_version=17,
                    dynamo=False,  # the TorchScript exporter: no onnxscript needed, seconds for MiniLM
                )
            os.replace(tmp, self.path)  # a crash mid-export never leaves a half file to load
        finally:
            Path(tmp).unlink(missing_ok=True)
        log.info("exported %s to ONNX at %s", self.embedder.name, self.path)

    def encode(self, texts: list[str], batch_size: int = 32, progress=None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        tokenizer = self.embedder.tokenizer
        with self._lock:
            for start in range(0, len(texts), batch_size):
                rows = order[start : start + batch_size]
                enc = tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.embedder.max_tokens,
                    return_tensors="np",
                )
                hidden = self.session.run(None, {k: enc[k].astype(np.int64) for k in INPUTS})[0]
                mask = enc["attention_mask"][..., None].astype(np.float32)
                pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)  # mean over real tokens
                out[rows] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
                if progress is not None:
                    progress(min(start + batch_size, len(texts)), len(texts))
        return out


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())
