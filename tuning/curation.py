"""One entry point for the curation services the UI and the CLI need."""

from __future__ import annotations

from dataclasses import dataclass

from assistant.workspace import Workspace

from .example_store import ExampleStore
from .versions import DatasetVersions


@dataclass
class Curation:
    workspace: Workspace
    store: ExampleStore
    versions: DatasetVersions


def open_curation(workspace: Workspace) -> Curation:
    store = ExampleStore(workspace.db)
    return Curation(workspace=workspace, store=store, versions=DatasetVersions(workspace, store))
