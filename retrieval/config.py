"""The knowledge base's settings: the embedding model, the vector index kind (and when "auto"
switches from exact search to HNSW), the abstention threshold and the chunk sizes. Explicit
arguments win over TAILOR_* variables (read through assistant.settings), which win over the
defaults."""

from __future__ import annotations

from dataclasses import dataclass

from assistant.embeddings import DEFAULT_EMBEDDING_MODEL, Embedder
from assistant.errors import ValidationError
from assistant.settings import env_number, env_str

from .abstain import DEFAULT_MIN_SCORE
from .chunking import DEFAULT_OVERLAP_TOKENS, DEFAULT_TARGET_TOKENS
from .encoder import EMBED_BACKENDS
from .index import DEFAULT_HNSW_THRESHOLD, FLAT, HNSW, IVF

INDEX_KINDS = ("auto", FLAT, HNSW, IVF)


def setting_number(name: str, default: float) -> float:
    """A numeric TAILOR_* setting; a bad value is the user's to fix (ValidationError)."""
    try:
        return env_number(name, default)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


@dataclass(frozen=True)
class KnowledgeConfig:
    model_name: str = DEFAULT_EMBEDDING_MODEL
    index_kind: str = "auto"  # auto, flat, hnsw or ivf
    hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD  # chunks beyond which "auto" uses HNSW
    min_score: float = DEFAULT_MIN_SCORE  # support needed to answer (abstain.py)
    target_tokens: int = DEFAULT_TARGET_TOKENS
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS
    embed_backend: str = "auto"  # auto, torch or onnx (encoder.py); auto: ONNX when installed

    @classmethod
    def resolve(
        cls,
        embedder: Embedder | None = None,
        *,
        embedding_model: str | None = None,
        index_kind: str | None = None,
        hnsw_threshold: int | None = None,
        min_score: float | None = None,
        target_tokens: int = DEFAULT_TARGET_TOKENS,
        overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
        embed_backend: str = "auto",
    ) -> KnowledgeConfig:
        model_name = (
            embedder.name
            if embedder is not None
            else embedding_model or env_str("TAILOR_EMBEDDING_MODEL") or DEFAULT_EMBEDDING_MODEL
        )
        kind = (index_kind or env_str("TAILOR_INDEX_KIND") or "auto").lower()
        if kind not in INDEX_KINDS:
            raise ValidationError(f"index kind must be auto, flat, hnsw or ivf, not {kind!r}")
        if embed_backend not in EMBED_BACKENDS:
            raise ValidationError(f"the embedding backend must be auto, torch or onnx, not {embed_backend!r}")
        return cls(
            model_name=model_name,
            index_kind=kind,
            hnsw_threshold=int(hnsw_threshold or setting_number("TAILOR_HNSW_THRESHOLD", DEFAULT_HNSW_THRESHOLD)),
            min_score=float(
                min_score if min_score is not None else setting_number("TAILOR_RAG_MIN_SCORE", DEFAULT_MIN_SCORE)
            ),
            target_tokens=target_tokens,
            overlap_tokens=overlap_tokens,
            embed_backend=embed_backend,
        )

    def desired_kind(self, count: int, current: str | None = None) -> str:
        """The index kind for `count` vectors (`current`: the kind the index has now)."""
        if self.index_kind != "auto":
            return self.index_kind
        if current == HNSW:  # hysteresis: do not flip back and forth around the threshold
            return HNSW if count > self.hnsw_threshold // 2 else FLAT
        return HNSW if count > self.hnsw_threshold else FLAT
