"""Import and export of training examples.

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

An import is one recorded operation (ExampleStore.begin_import): every batch is tagged with
it, so an import that is killed part-way is shown afterwards as partial, with an undo that
removes exactly its rows. Examples already in the store (same normalised messages and
passages, see `dedup_hash`) are skipped and counted as already present, so importing the
same file again adds nothing; after an interrupted import it adds just the rest.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from assistant.errors import ValidationError, write_failed
from assistant.workspace import publish_dir, write_atomic

from .examples import Example, ExampleStore, chat_example, import_description, make_example, render_messages

Progress = Callable[[int, int], None]  # (done, total) in bytes or rows
FORMATS = ("messages", "prompt-completion", "hf")
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


# ---- reading text ---------------------------------------------------------------------------
UTF16_SNIFF_BYTES = 1 << 16


def _utf16_without_bom(head: bytes) -> str | None:
    """The codec ("utf-16-le" or "utf-16-be") when `head`, the file's first bytes, looks like
    UTF-16 without a byte-order mark: mostly ASCII text (JSON's punctuation and keys always
    are) is then a NUL in every other byte, on one side only. None otherwise. UTF-8 text
    never looks like this (a JSON line cannot even hold a raw NUL)."""
    n = len(head) - len(head) % 2
    if n < 4:
        return None
    even, odd = head[0:n:2].count(0), head[1:n:2].count(0)
    half = n // 2
    if odd >= 0.3 * half and even <= odd / 10:
        return "utf-16-le"  # "{" is 7b 00
    if even >= 0.3 * half and odd <= even / 10:
        return "utf-16-be"  # "{" is 00 7b
    return None


def detect_encoding(path: Path) -> str:
    """The file's text encoding: "utf-8", "utf-8-sig" (a UTF-8 byte-order mark), "utf-16" (a
    UTF-16 byte-order mark), or "utf-16-le"/"utf-16-be" for UTF-16 *without* a byte-order
    mark, which is recognised (not guessed from the file name) and decoded: in its first
    64 KiB, one byte of every two is NUL on the same side, as ASCII-heavy UTF-16 always is.
    Anything else must be valid UTF-8. Checks the whole file (streaming) so that a wrongly
    encoded file imports nothing and the message names the first bad byte (for UTF-16
    without a mark, the message says that is what it looked like)."""
    with open(path, "rb") as fh:
        head = fh.read(UTF16_SNIFF_BYTES)
        if head.startswith(codecs.BOM_UTF8):
            encoding, skip = "utf-8-sig", 3
        elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            encoding, skip = "utf-16", 0
        else:
            encoding, skip = _utf16_without_bom(head) or "utf-8", 0
        fh.seek(skip)
        codec = "utf-8" if encoding == "utf-8-sig" else encoding
        decoder = codecs.getincrementaldecoder(codec)("strict")
        offset = skip
        while True:
            chunk = fh.read(1 << 20)
            final = not chunk
            pending = len(decoder.getstate()[0])  # bytes of a character split across chunks
            try:
                decoder.decode(chunk, final=final)
            except UnicodeDecodeError as exc:
                pos = offset - pending + exc.start  # exc.object is pending bytes + this chunk
                name = {
                    "utf-8-sig": "UTF-8",
                    "utf-16-le": "UTF-16 (little-endian, no byte-order mark)",
                    "utf-16-be": "UTF-16 (big-endian, no byte-order mark)",
                }.get(encoding, encoding.upper())
                looked = (
                    " It looked like UTF-16 without a byte-order mark (a NUL in every other byte)."
                    if encoding in ("utf-16-le", "utf-16-be")
                    else ""
                )
                raise ValidationError(
                    f"{path.name} is not valid {name} text: byte offset {pos} "
                    f"(byte 0x{exc.object[exc.start]:02x}, line {_line_at(path, pos)}) cannot be decoded.{looked} "
                    "Save the file as UTF-8 (or UTF-16 with a byte-order mark) and import it again."
                ) from None
            if final:
                break
            offset += len(chunk)
    return encoding


def _line_at(path: Path, offset: int) -> int:
    with open(path, "rb") as fh:
        return fh.read(offset).count(b"\n") + 1


def _lines(path: Path, encoding: str) -> Iterator[tuple[int, str, int]]:
    """(line number, text, bytes read so far)."""
    if encoding.startswith("utf-16"):
        text = path.read_bytes().decode(encoding)
        total = path.stat().st_size
        # Split on "\n" only, as for UTF-8 (splitlines would also break at U+2028 and other
        # separators that a JSON string may hold).
        for n, line in enumerate(text.split("\n"), start=1):
            yield n, line, total
        return
    with open(path, "rb") as fh:
        if encoding == "utf-8-sig":
            fh.read(3)
        for n, raw in enumerate(fh, start=1):
            yield n, raw.decode("utf-8"), fh.tell()


# ---- records -> examples --------------------------------------------------------------------
def _common(rec: dict) -> dict:
    out = {}
    if "label" in rec and rec["label"] not in (None, ""):
        out["label"] = str(rec["label"])
    if rec.get("tags"):
        tags = rec["tags"]
        if not isinstance(tags, (list, str)):
            raise ValidationError("'tags' must be a list or a comma-separated string")
        out["tags"] = tags
    return out


def _text(value, name: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"'{name}' must be text, got {type(value).__name__}")
    if not value.strip():
        raise ValidationError(f"'{name}' is empty")
    return value


def record_to_example(rec, source: str = "import") -> tuple[str, Example]:
    """Detect the shape of one record and build the example. Raises ValidationError."""
    if not isinstance(rec, dict):
        raise ValidationError(f"expected a JSON object, got {type(rec).__name__}")
    common = _common(rec)
    system = rec.get("system") or ""
    if not isinstance(system, str):
        raise ValidationError("'system' must be text")
    passages = rec.get("passages") or None
    if "messages" in rec:
        messages = rec["messages"]
        if isinstance(messages, list) and system and not (messages and messages[0].get("role") == "system"):
            messages = [{"role": "system", "content": system}] + messages
        return "messages", make_example(messages, passages=passages, source=source, **common)
    if "prompt" in rec or "completion" in rec:
        prompt, completion = rec.get("prompt"), rec.get("completion")
        if prompt is None or completion is None:
            raise ValidationError("a prompt/completion record needs both 'prompt' and 'completion'")
        if isinstance(prompt, list) or isinstance(completion, list):  # TRL conversational prompt-completion
            if not isinstance(prompt, list) or not isinstance(completion, list):
                raise ValidationError("'prompt' and 'completion' must both be text or both be lists of messages")
            return "prompt-completion", make_example(prompt + completion, passages=passages, source=source, **common)
        return "prompt-completion", chat_example(
            _text(prompt, "prompt"), _text(completion, "completion"), system, passages=passages, source=source, **common
        )
    if "question" in rec and "answer" in rec:
        return "grounding", grounding_example(rec, source=source)
    keys = ", ".join(sorted(rec)[:6]) or "none"
    raise ValidationError(
        f"unknown record shape (fields: {keys}); expected 'messages', 'prompt'+'completion' or 'question'+'answer'"
    )


def grounding_example(rec: dict, source: str = "import") -> Example:
    """The demo grounding format: a question, the passages to answer it from, the answer.
    The passages are kept on the example, so training shows them to the model exactly as
    the chat does with retrieval on."""
    passages = rec.get("passages")
    if not isinstance(passages, list) or not passages:
        raise ValidationError("a grounding record needs a non-empty 'passages' list")
    return chat_example(
        _text(rec.get("question"), "question"),
        _text(rec.get("answer"), "answer"),
        rec.get("system") or "",
        passages=passages,
        source=source,
        **_common(rec),
    )


def import_grounding(store: ExampleStore, path: Path | str, **kw) -> ImportResult:
    return import_file(store, path, **kw)


# ---- import ---------------------------------------------------------------------------------
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
            line = reader.line_num
            rec = {k: v for k, v in row.items() if k is not None}
            if None in row:
                yield line, None, 0, f"{len(row[None])} more cell(s) than there are columns"
                continue
            if "question" in rec and "prompt" not in rec:
                rec["prompt"], rec["completion"] = rec.pop("question"), rec.pop("answer")
            rec.pop("passages", None)
            yield line, rec, int(total * min(1.0, line / n_lines)), None
        return
    for n, line, done in _lines(path, encoding):
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
    progress: Progress | None = None,
    tags=None,
) -> ImportResult:
    """Import a file (shape detected automatically). Bad records are listed, good ones kept,
    ones already in the store skipped. The import is recorded as one operation first; if it
    stops part-way (an error, Ctrl-C, or the process is killed) the rows that landed stay,
    marked as a partial import that `store.undo(result.batch)` removes. An exception raised
    here after rows landed carries `partial_import` (the operation as a dict).
    `progress(done, total)` is called after each batch (bytes for text files, rows otherwise)."""
    import time

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
    op = store.begin_import(path, file_hash=result.file_hash, source=source)
    result.operation, result.batch = op.id, op.batch

    def flush():
        nonlocal pending
        if pending:
            ids, present = store.add_import_batch(op, pending)
            result.ids += ids
            result.imported += len(ids)
            result.duplicates += present
            pending = []
        if progress is not None:
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
        status = store.finish_import(op, bad=result.bad_total, error=f"{type(exc).__name__}: {exc}"[:500])
        if status == "partial":
            result.status = "partial"
            try:
                exc.partial_import = store.get_import(op.id)  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
        raise
    store.finish_import(op, bad=result.bad_total)
    if result.imported:
        store.assign_splits()
    if total and progress is not None:
        progress(total, total)
    result.seconds = time.perf_counter() - started
    return result


# ---- export ---------------------------------------------------------------------------------
def export_record(ex: Example, fmt: str, rendered: bool = False) -> dict:
    """One example as a record of `fmt`. `rendered` inlines passages into the user turn (what
    the trainer sees) instead of keeping them in a separate field."""
    messages = render_messages(ex) if rendered else ex.messages
    passages = None if rendered else ex.passages
    extra = {}
    if ex.label is not None:
        extra["label"] = ex.label
    if ex.tags:
        extra["tags"] = ex.tags
    if passages:
        extra["passages"] = passages
    if fmt == "messages":
        return {"messages": messages, **extra}
    if fmt == "prompt-completion":
        body = [m for m in messages if m["role"] != "system"]
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        if len(body) == 2:  # a single turn: plain strings
            rec = {"prompt": body[0]["content"], "completion": body[1]["content"]}
            if system:
                rec["system"] = system
            return {**rec, **extra}
        return {"prompt": messages[:-1], "completion": messages[-1:], **extra}
    raise ValidationError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")


def export_examples(
    examples: list[Example],
    dest: Path | str,
    fmt: str = "messages",
    rendered: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write `examples` to `dest`: a .jsonl file, or for "hf" a `datasets` folder (one split
    per dataset split, via save_to_disk) with a parquet file per split beside it."""
    dest = Path(dest)
    if fmt not in FORMATS:
        raise ValidationError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "hf":
        try:
            return _export_hf(examples, dest, rendered)
        except OSError as exc:  # full or read-only destination; the temporaries are removed
            raise write_failed(dest, exc) from exc
    buf = io.StringIO()
    for i, ex in enumerate(examples, start=1):
        buf.write(json.dumps(export_record(ex, fmt, rendered), ensure_ascii=False) + "\n")
        if progress is not None and i % 1000 == 0:
            progress(i, len(examples))
    try:
        write_atomic(dest, buf.getvalue())
    except OSError as exc:  # full or read-only destination; write_atomic removed its temporary
        raise write_failed(dest, exc) from exc
    if progress is not None:
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
