"""Exporting training examples: a JSONL file of records ("messages" or "prompt-completion",
tuning/records.py), or for "hf" a Hugging Face `datasets` folder (save_to_disk, one split per
dataset split) with a parquet file per split beside it, or a single .parquet file.

Preference pairs go out only in the "preference" format (TRL's prompt/chosen/rejected), and
that format holds only pairs: no other format has a place for the rejected reply."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from assistant.errors import ValidationError, write_failed
from assistant.progress import Progress, no_progress
from assistant.workspace import publish_dir, write_atomic

from .example import Example, render_messages
from .records import FORMATS, export_record


def for_format(examples: list[Example], fmt: str) -> list[Example]:
    """The examples a `fmt` export writes: the pairs for "preference", the others otherwise."""
    return [ex for ex in examples if (ex.rejected is not None) == (fmt == "preference")]


def export_examples(
    examples: list[Example],
    dest: Path | str,
    fmt: str = "messages",
    rendered: bool = False,
    progress: Progress = no_progress,
) -> Path:
    """Write `examples` to `dest`: a .jsonl file, or for "hf" a `datasets` folder (one split
    per dataset split, via save_to_disk) with a parquet file per split beside it."""
    dest = Path(dest)
    if fmt not in FORMATS:
        raise ValidationError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    examples = for_format(examples, fmt)
    if fmt == "hf":
        try:
            return _export_hf(examples, dest, rendered)
        except OSError as exc:  # full or read-only destination; the temporaries are removed
            raise write_failed(dest, exc) from exc
    buf = io.StringIO()
    for i, ex in enumerate(examples, start=1):
        buf.write(json.dumps(export_record(ex, fmt, rendered), ensure_ascii=False) + "\n")
        if i % 1000 == 0:
            progress(i, len(examples))
    try:
        write_atomic(dest, buf.getvalue())
    except OSError as exc:  # full or read-only destination; write_atomic removed its temporary
        raise write_failed(dest, exc) from exc
    progress(len(examples), len(examples))
    return dest


def _hf_row(ex: Example, rendered: bool) -> dict:
    messages = render_messages(ex) if rendered else ex.messages
    passages = (
        []
        if rendered
        else [
            {
                "source": str(p.get("source", "")),
                "text": str(p.get("text", "")),
                "heading": str(p.get("heading", "")),
                "id": str(p.get("id", "")),
            }
            for p in (ex.passages or [])
        ]
    )
    return {"example_id": ex.id, "messages": messages, "passages": passages, "label": ex.label, "tags": list(ex.tags)}


def _export_hf(examples: list[Example], dest: Path, rendered: bool) -> Path:
    import datasets

    if dest.suffix.lower() == ".parquet":
        rows = [_hf_row(ex, rendered) for ex in examples]
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        try:
            datasets.Dataset.from_list(rows, features=_hf_features()).to_parquet(str(tmp))
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk leaves half a parquet file behind otherwise
            raise
        return dest
    by_split: dict[str, list[dict]] = {}
    for ex in examples:
        by_split.setdefault(ex.split or "train", []).append(_hf_row(ex, rendered))
    dd = datasets.DatasetDict(
        {s: datasets.Dataset.from_list(rows, features=_hf_features()) for s, rows in by_split.items()}
    )
    with publish_dir(dest) as tmp:
        dd.save_to_disk(str(tmp / "dataset"))
        for s, ds in dd.items():
            ds.to_parquet(str(tmp / f"{s}.parquet"))
    return dest


def _hf_features():
    from datasets import Features, List, Value

    return Features(
        {
            "example_id": Value("int64"),
            "messages": List({"role": Value("string"), "content": Value("string")}),
            "passages": List(
                {"source": Value("string"), "text": Value("string"), "heading": Value("string"), "id": Value("string")}
            ),
            "label": Value("string"),
            "tags": List(Value("string")),
        }
    )


def hf_dataset_path(folder: Path) -> Path:
    """An exported hf folder keeps the datasets folder under dataset/."""
    return folder / "dataset" if (folder / "dataset").is_dir() else folder
