"""A tune's grounding mix once made, and where it is kept: `GroundingMix` (the examples, their
rendered messages and a summary), the job folder's grounding.jsonl (the examples as dataset
version lines, trained on beside the version's own) and grounding.json (the summary), and what
the adapter card records of it (`card_summary`). Apart from the composer, so that the job queue
and the worker, which only store and read a mix, import none of what makes one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .example import Example, render_messages

GROUNDING_FILE = "grounding.jsonl"  # in the job folder: the examples, as dataset version lines
GROUNDING_SUMMARY = "grounding.json"  # in the job folder: what was mixed in (copied to the adapter card)


@dataclass
class GroundingMix:
    """What one tune mixes in: the examples and a summary for the job log and the adapter card."""

    examples: list[Example] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    rendered: list[list[dict]] = field(default_factory=list)  # render_messages of each example

    @property
    def message(self) -> str:
        return str(self.summary.get("message", ""))

    def lines(self) -> list[dict]:
        """The examples as dataset version lines (what the trainer reads)."""
        rendered = self.rendered if len(self.rendered) == len(self.examples) else None
        return [
            {
                "example_id": None,
                "messages": rendered[i] if rendered else render_messages(ex),
                "label": None,
                "tags": list(ex.tags),
                "grounding": ex.provenance,
            }
            for i, ex in enumerate(self.examples)
        ]


# ---- the job folder ---------------------------------------------------------------------------
def write_grounding(job_dir: Path, mix: GroundingMix) -> None:
    """The job's grounding files, written when the job is queued (the worker reads them)."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    if mix.examples:
        (job_dir / GROUNDING_FILE).write_text(
            "".join(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n" for line in mix.lines()),
            encoding="utf-8",
        )
    (job_dir / GROUNDING_SUMMARY).write_text(json.dumps(mix.summary, indent=1, ensure_ascii=False), encoding="utf-8")


def read_grounding_summary(job_dir: Path | str) -> dict | None:
    path = Path(job_dir) / GROUNDING_SUMMARY
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def card_summary(summary: dict | None) -> dict | None:
    """What the adapter card records of a tune's grounding mix."""
    if summary is None:
        return None
    keys = (
        "enabled",
        "ratio",
        "seed",
        "examples",
        "answerable",
        "not_in_sources",
        "share",
        "documents",
        "chunks",
        "max_examples",
        "exclusions",
        "candidates",
        "voice",
        "hash",
        "generator",
        "message",
    )
    return {k: summary[k] for k in keys if k in summary}
