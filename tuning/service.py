"""The tuning service: what the Tune tab and `tailor tune` call. One click = snapshot the
current dataset, queue a job on it with the default (or given) config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from assistant.errors import ValidationError
from assistant.workspace import Workspace

from .config import TrainConfig
from .job_store import Job
from .jobs import JobManager
from .registry import AdapterRegistry
from .versions import DatasetVersions


@dataclass
class TuneService:
    """What the Tune tab and `tailor tune` call: one click = snapshot the current dataset,
    queue a job on it with the default (or given) config."""

    workspace: Workspace
    base_model: str
    base_model_path: Path
    jobs: JobManager
    registry: AdapterRegistry

    def versions(self) -> DatasetVersions:
        return DatasetVersions(self.workspace)

    def start(
        self,
        *,
        dataset_version: int | None = None,
        config: TrainConfig | None = None,
        family: str | None = None,
        activate: bool = True,
    ) -> Job:
        versions = self.versions()
        version = (
            versions.get(dataset_version) if dataset_version is not None else versions.snapshot("taken for training")
        )
        if not version.counts.get("train"):
            raise ValidationError(f"dataset version {version.id} has no training examples")
        return self.jobs.submit(
            base_model=self.base_model,
            base_model_path=self.base_model_path,
            dataset_version=version.id,
            dataset_path=version.path,
            dataset_hash=version.content_hash,
            config=config,
            family=family,
            activate=activate,
        )


def open_tuning(
    workspace: Workspace, base_model: str, base_model_path: Path | str, *, serving: bool = False
) -> TuneService:
    """`serving=True` inside the app: jobs get cores-1 threads and the caller should run
    `service.jobs.start_background()` so queued jobs start when the current one ends."""
    jobs = JobManager(workspace, serving=serving)
    return TuneService(workspace, base_model, Path(base_model_path), jobs, jobs.registry)
