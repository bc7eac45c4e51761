"""Evaluation: A/B runs of base vs prompted vs tuned models with and without retrieval, metrics with
bootstrap intervals, paired tests, blind pairwise votes with win rates and Bradley–Terry.

evals imports only the core (`assistant`); the ui/cli layer composes it with the tuning and
retrieval packages (the dataset version's test split arrives as a folder path, the retriever
through the chat service)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily below so that `import evals` stays light
    from .runner import EvalService
    from .store import EvalStore
    from .votes import VoteService


@dataclass
class Evals:
    store: EvalStore
    runs: EvalService
    votes: VoteService


def open_evals(workspace, chat, embedder_factory=None, examples=None) -> Evals:
    """The evaluation services for a workspace and a chat service (engine, adapters, retriever).
    `examples`: the workspace's example store (tuning's), where the prompted arm's default style
    prompt comes from; without it that arm needs a style prompt written for it."""
    from .runner import EvalService
    from .store import EvalStore
    from .votes import VoteService

    store = EvalStore(workspace.db)
    return Evals(store, EvalService(store, chat, embedder_factory, examples), VoteService(store))
