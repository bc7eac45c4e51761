"""Evaluation sets as plain data, and loaders for the three kinds Tailor evaluates on:

- a facts set: JSONL lines `{"id", "question", "answer", "aliases", "document"}` (e.g.
  demo/lantern_bay/facts.jsonl); the reply is right when it contains the answer or an alias;
- an uploaded JSONL with reference answers, as `{"prompt", "completion"}` or chat
  `{"messages": [...]}` lines (the last message, from the assistant, is the reference), with
  an optional `"label"` and `"id"`;
- a dataset version's frozen test split: `<version folder>/test.jsonl` lines
  `{"example_id", "messages": [...], "label"}`.

evals never imports the tuning package: the cli/ui layer finds the version folder and hands
its path (and id) here."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from assistant.errors import NotFoundError, ValidationError
from assistant.prompting import Passage, grounded_user_message

_ROLES = {"system", "user", "assistant"}
MAX_ITEMS = 100_000


@dataclass
class EvalItem:
    id: str
    # The conversation up to the turn being evaluated: system prompt (optional), earlier
    # turns, and the user message last. The reference is the ideal assistant reply to it.
    messages: list[dict]
    reference: str
    label: str | None = None
    answers: list[str] | None = None  # gold answer and aliases, for fact accuracy
    passages: list[dict] | None = None  # passages the reference was written from, if any

    @property
    def question(self) -> str:
        return self.messages[-1]["content"]

    @property
    def system_prompt(self) -> str:
        return "\n".join(m["content"] for m in self.messages if m["role"] == "system")

    @property
    def history(self) -> list[dict]:
        return [m for m in self.messages[:-1] if m["role"] != "system"]

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EvalItem:
        return cls(
            id=d["id"],
            messages=d["messages"],
            reference=d["reference"],
            label=d.get("label"),
            answers=d.get("answers"),
            passages=d.get("passages"),
        )


@dataclass
class EvalSet:
    kind: str  # "facts", "test", "file"
    name: str  # what the user picked: a file name or a dataset version id
    items: list[EvalItem]
    dataset_version: str | None = None  # the dataset version the test split came from
    source: str = ""  # file path
    skipped: list[str] = field(default_factory=list)  # "line N: reason" for lines not used

    @property
    def fingerprint(self) -> str:
        """Hash of the items' content: runs on the same fingerprint compare like with like."""
        h = hashlib.sha256()
        for item in self.items:
            h.update(json.dumps([item.id, item.messages, item.reference], sort_keys=True).encode())
        return h.hexdigest()[:16]


def _read_jsonl(path: Path) -> list[tuple[int, dict | None, str]]:
    """(line number, object or None, error) for each non-blank line."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"evaluation set {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{path.name} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    rows: list[tuple[int, dict | None, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append((number, None, f"not JSON ({exc.msg})"))
            continue
        rows.append((number, obj, "") if isinstance(obj, dict) else (number, None, "not a JSON object"))
    if not rows:
        raise ValidationError(f"{path.name} is empty")
    if len(rows) > MAX_ITEMS:
        raise ValidationError(f"{path.name} has {len(rows)} lines; evaluation sets are limited to {MAX_ITEMS}")
    return rows


def _check_messages(messages) -> list[dict]:
    if not isinstance(messages, list) or len(messages) < 2:
        raise ValueError("'messages' must be a list of at least a user and an assistant message")
    out = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
            raise ValueError("each message needs a role (system/user/assistant) and text content")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "assistant" or not out[-1]["content"].strip():
        raise ValueError("the last message must be the assistant's reference answer")
    if out[-2]["role"] != "user" or not out[-2]["content"].strip():
        raise ValueError("the reference must answer a user message")
    return out


def _finish(
    kind: str, name: str, items: list[EvalItem], skipped: list[str], path: Path, dataset_version: str | None = None
) -> EvalSet:
    if not items:
        detail = f" ({'; '.join(skipped[:3])})" if skipped else ""
        raise ValidationError(f"{path.name} has no usable items{detail}")
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValidationError(f"{path.name}: item id {item.id!r} appears twice")
        seen.add(item.id)
    return EvalSet(kind, name, items, dataset_version=dataset_version, source=str(path), skipped=skipped)


def load_facts(path: Path | str) -> EvalSet:
    path = Path(path)
    items, skipped = [], []
    for number, obj, error in _read_jsonl(path):
        if obj is None:
            skipped.append(f"line {number}: {error}")
            continue
        question, answer = obj.get("question"), obj.get("answer")
        aliases = obj.get("aliases") or []
        if not isinstance(question, str) or not question.strip() or not isinstance(answer, str) or not answer.strip():
            skipped.append(f"line {number}: needs a non-empty 'question' and 'answer'")
            continue
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            skipped.append(f"line {number}: 'aliases' must be a list of strings")
            continue
        items.append(
            EvalItem(
                id=str(obj.get("id") or f"line-{number}"),
                messages=[{"role": "user", "content": question.strip()}],
                reference=answer.strip(),
                answers=[answer.strip()] + [a for a in aliases if a.strip()],
            )
        )
    return _finish("facts", path.name, items, skipped, path)


def load_reference_file(path: Path | str) -> EvalSet:
    """An uploaded JSONL of prompt/completion or messages lines with reference answers. Lines
    may also carry "answers"/"aliases" (fact accuracy) and "label" (classification)."""
    path = Path(path)
    items, skipped = [], []
    for number, obj, error in _read_jsonl(path):
        if obj is None:
            skipped.append(f"line {number}: {error}")
            continue
        try:
            if "messages" in obj:
                messages = _check_messages(obj["messages"])
            elif "prompt" in obj or "completion" in obj:
                prompt, completion = obj.get("prompt"), obj.get("completion")
                if not isinstance(prompt, str) or not prompt.strip():
                    raise ValueError("'prompt' must be non-empty text")
                if not isinstance(completion, str) or not completion.strip():
                    raise ValueError("'completion' must be non-empty text (it is the reference answer)")
                messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
            elif "question" in obj and "answer" in obj:
                q, a = obj["question"], obj["answer"]
                if not isinstance(q, str) or not q.strip() or not isinstance(a, str) or not a.strip():
                    raise ValueError("'question' and 'answer' must be non-empty text")
                messages = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
                obj = {**obj, "answers": [a] + list(obj.get("aliases") or [])}
            else:
                raise ValueError("expected 'messages', 'prompt'/'completion' or 'question'/'answer'")
            answers = obj.get("answers")
            if answers is not None and (not isinstance(answers, list) or not all(isinstance(a, str) for a in answers)):
                raise ValueError("'answers' must be a list of strings")
            label = obj.get("label")
            if label is not None and not isinstance(label, (str, int)):
                raise ValueError("'label' must be text")
        except ValueError as exc:
            skipped.append(f"line {number}: {exc}")
            continue
        items.append(
            EvalItem(
                id=str(obj.get("id") or obj.get("example_id") or f"line-{number}"),
                messages=messages[:-1],
                reference=messages[-1]["content"],
                label=str(label) if label is not None else None,
                answers=[a for a in answers if a.strip()] if answers else None,
                passages=obj.get("passages") if isinstance(obj.get("passages"), list) else None,
            )
        )
    return _finish("file", path.name, items, skipped, path)


def load_test_split(version_dir: Path | str, version_id: str | None = None) -> EvalSet:
    """Items from a dataset version's frozen test split (`<version_dir>/test.jsonl`); its
    preference pairs (lines with a "rejected" reply) are not items: they are DPO's data."""
    version_dir = Path(version_dir)
    path = version_dir / "test.jsonl"
    if not path.is_file():
        raise NotFoundError(f"dataset version {version_dir.name} has no test split ({path} is missing)")
    version_id = version_id or version_dir.name
    items, skipped = [], []
    for number, obj, error in _read_jsonl(path):
        if obj is None:
            skipped.append(f"line {number}: {error}")
            continue
        if isinstance(obj, dict) and "rejected" in obj:
            continue
        try:
            messages = _check_messages(obj.get("messages"))
        except ValueError as exc:
            skipped.append(f"line {number}: {exc}")
            continue
        label = obj.get("label")
        passages = obj.get("passages") if isinstance(obj.get("passages"), list) else None
        question, sources = split_grounded(messages[-2]["content"])
        if sources is not None:
            messages[-2] = {"role": "user", "content": question}
            passages = passages or [{"text": sources}]
        items.append(
            EvalItem(
                id=str(obj.get("example_id") or obj.get("id") or f"line-{number}"),
                messages=messages[:-1],
                reference=messages[-1]["content"],
                label=str(label) if label not in (None, "") else None,
                passages=passages,
            )
        )
    return _finish("test", version_id, items, skipped, path, dataset_version=version_id)


# How the chat shows sources to the model (taken from the prompt builder, not copied), so a
# saved example whose prompt already holds its passages can be split back into the question.
_GROUNDED_HEAD = grounded_user_message("?", [Passage(id=0, source="s", text="t")]).split("\n\n", 1)[0] + "\n\n"
_QUESTION_MARK = "\n\nQuestion: "


def split_grounded(text: str) -> tuple[str, str | None]:
    """(question, sources block) for a user turn built with retrieval passages; (text, None)
    for a plain one. Dataset versions store the rendered prompt, so without this a
    "retrieval off" arm would still see the sources, and a retrieval arm would see two sets."""
    if text.startswith(_GROUNDED_HEAD) and _QUESTION_MARK in text:
        body, question = text[len(_GROUNDED_HEAD) :].rsplit(_QUESTION_MARK, 1)
        if question.strip():
            return question, body
    return text, None


def latest_version_dir(datasets_dir: Path | str) -> Path | None:
    """Fallback for finding the newest dataset version folder (`datasets/v<N>/test.jsonl`)
    when the caller has no version registry to ask."""
    root = Path(datasets_dir)
    if not root.is_dir():
        return None
    found = []
    for folder in root.iterdir():
        if folder.is_dir() and folder.name.startswith("v") and (folder / "test.jsonl").is_file():
            digits = folder.name[1:].split("-")[0].split("_")[0]
            found.append((int(digits) if digits.isdigit() else -1, folder.stat().st_mtime, folder))
    return max(found)[2] if found else None


def subsample(evalset: EvalSet, limit: int | None, seed: int = 0) -> EvalSet:
    """At most `limit` items, chosen by a seeded shuffle and kept in file order, so a quick run
    on part of a set is reproducible."""
    if not limit or limit >= len(evalset.items):
        return evalset
    if limit < 1:
        raise ValidationError("the item limit must be at least 1")
    import random

    keep = set(random.Random(seed).sample(range(len(evalset.items)), limit))
    items = [item for i, item in enumerate(evalset.items) if i in keep]
    return EvalSet(evalset.kind, evalset.name, items, evalset.dataset_version, evalset.source, evalset.skipped)
