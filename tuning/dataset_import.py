"""Importing training examples from a file (the records: tuning/records.py).

Import reads, one record at a time:
- JSONL prompt/completion: {"prompt": str, "completion": str} (also TRL's conversational
  form where prompt and completion are lists of messages);
- JSONL chat: {"messages": [...]} (TRL and the OpenAI fine-tuning API);
- JSONL grounding: {"question", "passages": [{"source", "text"}], "answer"};
- CSV with prompt and completion columns (question/answer also accepted);
- a Hugging Face `datasets` folder (save_to_disk) or a .parquet file, as exported here.
Optional fields on any record: system, label, tags, passages.

The shape is detected per record, so a file may mix them. A record that cannot be used is
reported with its line number and the reason (a line nested too deeply to parse too), and
every valid record is still imported. Rows are written in batched transactions (one per
`batch_size` rows): a 100,000-line file is a few dozen commits, not 100,000.

An import is one recorded operation (tuning/import_log.py): every batch is tagged with
it, so an import that is killed part-way is shown afterwards as partial, with an undo that
removes exactly its rows. Examples already in the store (same normalised messages and
passages, see `dedup_hash`) are skipped and counted as already present, so importing the
same file again adds nothing; after an interrupted import it adds just the rest.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from assistant.errors import ValidationError
from assistant.progress import Progress, no_progress

from .dataset_export import hf_dataset_path
from .example import Example
from .example_store import ExampleStore
from .import_log import import_description
from .records import record_to_example
from .text_encoding import detect_encoding, text_lines

MAX_BAD_SHOWN = 1000


@dataclass
class BadLine:
    line: int
    reason: str


@dataclass
class ImportResult:
    path: str
    imported: int = 0
    bad: list[BadLine] = field(default_factory=list)
    bad_total: int = 0
    formats: dict = field(default_factory=dict)  # detected shape -> count
    encoding: str = "utf-8"
    seconds: float = 0.0
    ids: list[int] = field(default_factory=list)
    duplicates: int = 0  # valid records skipped: already in the store (or earlier in the file)
    operation: int | None = None  # the recorded import (example_imports.id)
    batch: str | None = None  # its undo id
    status: str = "done"  # done, or partial when it stopped part-way
    interrupted: list[dict] = field(default_factory=list)  # earlier imports left partial, when this one began
    file_hash: str | None = None  # sha256 of the file (None for a datasets folder)

    def summary(self) -> str:
        shapes = ", ".join(f"{n} {k}" for k, n in sorted(self.formats.items())) or "none"
        text = f"Imported {self.imported} examples from {Path(self.path).name} ({shapes})."
        if self.duplicates:
            text += f" {self.duplicates} already present (skipped)."
        if self.bad_total:
            text += f" {self.bad_total} line(s) skipped:"
            text += "".join(f"\n  line {b.line}: {b.reason}" for b in self.bad[:50])
            if self.bad_total > 50:
                text += f"\n  ... and {self.bad_total - 50} more"
        text += "".join(f"\n{note}" for note in self.notes())
        return text

    def notes(self) -> list[str]:
        """Lines about earlier imports that were interrupted (partial)."""
        out = []
        for op in self.interrupted:
            same = op["file_hash"] is not None and op["file_hash"] == self.file_hash
            out.append(
                f"Note: {import_description(op)} kept {op['examples']} examples; "
                + (
                    "this import skipped those as already present and added the rest."
                    if same and self.status == "done"
                    else f"undo {op['batch']} removes them."
                )
            )
        return out


def import_grounding(store: ExampleStore, path: Path | str, **kw) -> ImportResult:
    return import_file(store, path, **kw)


def _records(path: Path, encoding: str) -> Iterator[tuple[int, object, int, str | None]]:
    """(line number, record or None, progress bytes, error or None)."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        text = path.read_bytes().decode(encoding)
        total, n_lines = path.stat().st_size, max(1, text.count("\n"))
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        fields = [f.strip().lower() for f in (reader.fieldnames or [])]
        if not fields:
            raise ValidationError(f"{path.name} is empty")
        reader.fieldnames = fields
        has = set(fields)
        if not ({"prompt", "completion"} <= has or {"question", "answer"} <= has):
            raise ValidationError(
                f"{path.name}: a CSV file needs 'prompt' and 'completion' columns (found: {', '.join(fields)})"
            )
        for row in reader:
            line_no = reader.line_num
            rec = {k: v for k, v in row.items() if k is not None}
            if None in row:
                yield line_no, None, 0, f"{len(row[None])} more cell(s) than there are columns"
                continue
            if "question" in rec and "prompt" not in rec:
                rec["prompt"], rec["completion"] = rec.pop("question"), rec.pop("answer")
            rec.pop("passages", None)
            yield line_no, rec, int(total * min(1.0, line_no / n_lines)), None
        return
    for n, line, done in text_lines(path, encoding):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            yield n, None, done, f"not valid JSON ({exc.msg} at column {exc.colno})"
            continue
        except RecursionError:
            yield n, None, done, "nested too deeply to read (lists or objects inside one another)"
            continue
        if ("\\ud" in line or "\\uD" in line) and not _encodable(rec):
            yield n, None, done, "holds an unpaired surrogate escape (\\ud800-\\udfff), which is not text"
            continue
        yield n, rec, done, None


def _encodable(rec) -> bool:
    try:
        json.dumps(rec, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


def _table_records(path: Path) -> Iterator[tuple[int, object, int, str | None]]:
    import datasets

    if path.is_dir():
        try:
            ds = datasets.load_from_disk(str(hf_dataset_path(path)))
        except Exception as exc:
            raise ValidationError(f"{path} is not a Hugging Face datasets folder: {exc}") from exc
        parts = list(ds.values()) if isinstance(ds, datasets.DatasetDict) else [ds]
    else:
        try:
            parts = [datasets.Dataset.from_parquet(str(path))]
        except Exception as exc:
            raise ValidationError(f"{path.name} is not a readable parquet file: {exc}") from exc
    total = sum(len(p) for p in parts)
    n = 0
    for part in parts:
        for rec in part:
            n += 1
            rec = {k: v for k, v in rec.items() if v is not None}
            if rec.get("passages") == []:
                rec.pop("passages")
            yield n, rec, n, None
    if total == 0:
        raise ValidationError(f"{path.name} has no rows")


def _file_hash(path: Path) -> str | None:
    if path.is_dir():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_file(
    store: ExampleStore,
    path: Path | str,
    *,
    source: str = "import",
    batch_size: int = 2000,
    progress: Progress = no_progress,
    tags=None,
) -> ImportResult:
    """Import a file (shape detected automatically). Bad records are listed, good ones kept,
    ones already in the store skipped. The import is recorded as one operation first; if it
    stops part-way (an error, Ctrl-C, or the process is killed) the rows that landed stay,
    marked as a partial import that `store.undo(result.batch)` removes. An exception raised
    here after rows landed carries `partial_import` (the operation as a dict).
    `progress(done, total)` is called after each batch (bytes for text files, rows otherwise)."""
    started = time.perf_counter()
    path = Path(path)
    if not path.exists():
        raise ValidationError(f"{path} does not exist")
    result = ImportResult(path=str(path))
    if path.is_dir() or path.suffix.lower() == ".parquet":
        result.encoding = "binary"
        records = _table_records(path)
        total = None
    else:
        if path.stat().st_size == 0:
            raise ValidationError(f"{path.name} is empty: nothing to import")
        result.encoding = detect_encoding(path)
        records = _records(path, result.encoding)
        total = path.stat().st_size
    extra_tags = [t.strip() for t in (tags.split(",") if isinstance(tags, str) else (tags or [])) if t.strip()]
    pending: list[Example] = []
    last_done = 0
    seen_any = False

    result.file_hash = _file_hash(path)
    result.interrupted = [op for op in store.imports(None, status="partial", undoable=True) if not op["note"]]
    op = store.import_log.begin(path, file_hash=result.file_hash, source=source)
    result.operation, result.batch = op.id, op.batch

    def flush():
        nonlocal pending
        if pending:
            ids, present = store.import_log.add_batch(op, pending)
            result.ids += ids
            result.imported += len(ids)
            result.duplicates += present
            pending = []
        progress(last_done, total or last_done)

    try:
        for line, rec, done, error in records:
            seen_any = True
            last_done = done
            if error is None:
                try:
                    shape, ex = record_to_example(rec, source=source)
                    if extra_tags:
                        ex.tags = ex.tags + [t for t in extra_tags if t not in ex.tags]
                    pending.append(ex)
                    result.formats[shape] = result.formats.get(shape, 0) + 1
                except ValidationError as exc:
                    error = str(exc)
                except RecursionError:
                    error = "nested too deeply to use (lists or objects inside one another)"
            if error is not None:
                result.bad_total += 1
                if len(result.bad) < MAX_BAD_SHOWN:
                    result.bad.append(BadLine(line, error))
            if len(pending) >= batch_size:
                flush()
        flush()
        if not seen_any:
            raise ValidationError(f"{path.name} has no records (only blank lines)")
    except BaseException as exc:
        status = store.import_log.finish(op, bad=result.bad_total, error=f"{type(exc).__name__}: {exc}"[:500])
        if status == "partial":
            result.status = "partial"
            try:
                exc.partial_import = store.get_import(op.id)  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
        raise
    store.import_log.finish(op, bad=result.bad_total)
    if result.imported:
        store.assign_splits()
    if total:
        progress(total, total)
    result.seconds = time.perf_counter() - started
    return result
