"""The tuning service: what the Tune tab and `tailor tune` call. One click = snapshot the
current dataset, make this tune's grounding examples from the documents, queue a job on it
with the default (or given) config. A preference tune (`method` dpo) trains on the version's
preference pairs instead, with no grounding examples (those are SFT answers)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from assistant.adapters import FULL
from assistant.errors import ValidationError
from assistant.workspace import Workspace

from .config import TrainConfig, default_threads, dpo_defaults, resolve_hardware
from .estimate import Estimate
from .estimate import estimate as estimate_run
from .full_model import check_memory
from .grounding_files import GROUNDING_FILE, write_grounding
from .grounding_mix import ChunkSource, Exclusions, GroundingMix, GroundingOptions, compose_grounding
from .job_store import Job
from .jobs import DEFAULT_FAMILY, JobManager
from .registry import AdapterRegistry
from .trainer import is_pair
from .versions import DatasetVersion, DatasetVersions


@dataclass
class TuneService:
    """What the Tune tab and `tailor tune` call: one click = snapshot the current dataset,
    queue a job on it with the default (or given) config.

    `chunks` (a callable returning the knowledge base's chunks as dicts or rows with source or
    document, heading, text) and `exclusions` (a callable returning the evaluation questions
    and answers that generated examples must never contain) are given by the layer that
    composes tuning with retrieval and the evaluation sets (app, CLI, demo): tuning imports
    neither."""

    workspace: Workspace
    base_model: str
    base_model_path: Path
    jobs: JobManager
    registry: AdapterRegistry
    chunks: ChunkSource | None = None
    exclusions: Callable[[], Exclusions | None] | None = None

    def preference_config(self, start: str | None = "active", **changes) -> TrainConfig:
        """A DPO config (tuning/config.dpo_defaults with `changes`) starting from `start`: an
        adapter name, "base" (a new LoRA on the base), or "active" (the chat's active adapter
        when there is one, else the base)."""
        name = (start or "active").strip()
        if name == "active":
            name = self.registry.active() or "base"
        return dpo_defaults(start_adapter=None if name == "base" else name, **changes)

    def versions(self) -> DatasetVersions:
        return DatasetVersions(self.workspace)

    def grounding_mix(
        self,
        version: DatasetVersion,
        config: TrainConfig,
        options: GroundingOptions | None = None,
        exclude: Exclusions | None = None,
    ) -> GroundingMix:
        """The grounding examples a tune on `version` mixes into its training data (none when
        `options.enabled` is off or there are no documents; the summary says why)."""
        options = (options or GroundingOptions()).validate()
        if not options.enabled:
            return compose_grounding(
                None, (), n_train=version.counts.get("train", 0), options=options, seed=config.seed
            )
        exclusions = self.exclusions() if self.exclusions is not None else None
        exclusions = (exclusions or Exclusions()).merged(exclude)
        return compose_grounding(
            self.chunks() if self.chunks is not None else None,
            # the examples only: a preference pair is DPO's, and counting it would enlarge the mix
            [r for r in version.records("train") if not is_pair(r)],
            options=options,
            seed=config.seed,
            exclusions=exclusions,
            max_length=config.max_length,
        )

    def estimate(
        self,
        *,
        dataset_version: int | None = None,
        config: TrainConfig | None = None,
        grounding: GroundingOptions | None = None,
        exclude: Exclusions | None = None,
    ) -> Estimate:
        """What `start` with the same arguments would cost here, from a short measured probe
        (tuning/estimate.py): the same dataset version, grounding mix and start adapter."""
        import tempfile

        config = (config or TrainConfig()).validate()
        versions = self.versions()
        version = (
            versions.get(dataset_version) if dataset_version is not None else versions.snapshot("taken for training")
        )
        start_dir = self.registry.get(config.start_adapter).path if config.start_adapter else None
        with tempfile.TemporaryDirectory(prefix="tailor-estimate-mix-") as tmp:
            extra: list[Path] = []
            if config.method != "dpo":
                mix = self.grounding_mix(version, config, grounding, exclude)
                write_grounding(Path(tmp), mix)
                if (Path(tmp) / GROUNDING_FILE).is_file():
                    extra.append(Path(tmp) / GROUNDING_FILE)
            return estimate_run(
                config,
                base_model_path=self.base_model_path,
                version_dir=version.path,
                extra_train=extra,
                start_adapter_dir=start_dir,
                threads=config.threads or default_threads(self.jobs.serving),
            )

    def start(
        self,
        *,
        dataset_version: int | None = None,
        config: TrainConfig | None = None,
        family: str | None = None,
        activate: bool = True,
        grounding: GroundingOptions | None = None,
        exclude: Exclusions | None = None,
        estimate: Estimate | None = None,
    ) -> Job:
        """Queue a tune. `grounding` (default: on, at the default ratio) mixes examples made from
        the documents into this job's training data; `exclude` adds to the exclusion list."""
        config = (config or TrainConfig()).validate()
        if config.start_adapter and self.registry.get(config.start_adapter).kind == FULL:  # a clear error now
            raise ValidationError(
                f"{config.start_adapter!r} is a full fine-tuned checkpoint; preference tuning continues a LoRA adapter"
            )
        if config.finetune == FULL:
            # refused now, with the numbers, rather than minutes later in the worker
            check_memory(config, resolve_hardware(config), self.base_model_path)
            family = family or f"{DEFAULT_FAMILY}-full"
        versions = self.versions()
        version = (
            versions.get(dataset_version) if dataset_version is not None else versions.snapshot("taken for training")
        )
        mix: GroundingMix | None = None
        if config.method == "dpo":
            if not version.pairs.get("train"):
                raise ValidationError(
                    f"dataset version {version.id} has no preference pairs in its train split: edit replies in the "
                    "chat, rate two replies to the same prompt 👍 and 👎, or import prompt/chosen/rejected pairs"
                )
            family = family or f"{DEFAULT_FAMILY}-dpo"
        else:
            if not version.counts.get("train"):
                raise ValidationError(f"dataset version {version.id} has no training examples")
            mix = self.grounding_mix(version, config, grounding, exclude)
        return self.jobs.submit(
            base_model=self.base_model,
            base_model_path=self.base_model_path,
            dataset_version=version.id,
            dataset_path=version.path,
            dataset_hash=version.content_hash,
            config=config,
            family=family,
            activate=activate,
            grounding=mix,
            estimate=estimate.as_dict() if estimate is not None else None,
        )


def open_tuning(
    workspace: Workspace,
    base_model: str,
    base_model_path: Path | str,
    *,
    serving: bool = False,
    chunks: ChunkSource | None = None,
    exclusions: Callable[[], Exclusions | None] | None = None,
) -> TuneService:
    """`serving=True` inside the app: jobs get cores-1 threads and the caller should run
    `service.jobs.start_background()` so queued jobs start when the current one ends.
    `chunks` / `exclusions`: see TuneService."""
    jobs = JobManager(workspace, serving=serving)
    return TuneService(workspace, base_model, Path(base_model_path), jobs, jobs.registry, chunks, exclusions)
