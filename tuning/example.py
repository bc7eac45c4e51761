"""A training example: the chat the trainer learns from, its validation, normalisation and hashes.

An example is a chat: an optional system prompt, the earlier turns of the conversation, the
final user turn and the assistant answer (always the last message). A *preference pair* is
an example with a `rejected` reply too: the last message is the chosen answer, `rejected`
the answer it was preferred to (DPO trains on these; SFT leaves them out). Pairs live in the
same table so that search, splits, versions, cleaning and undo treat them alike. It may carry the
retrieved passages the answer was grounded in; `render_messages` shows them to the trainer
exactly as the chat showed them to the model (through `assistant.prompting.build_messages`).

Two hashes say when examples are the same: `content_hash` (exact: messages and passages as
they are; the cleaning report's exact duplicates) and `dedup_hash` (messages and passages
after `normalised_text`; what imports skip as already present). `normalised_text` is also
the cleaning report's "normalise" fix, so a cleaned example still counts as the one that
was imported.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from assistant.errors import ValidationError
from assistant.prompting import Passage, build_messages

ROLES = ("system", "user", "assistant")
STATUSES = ("active", "excluded")  # excluded: kept in the store but left out of training
SPLITS = ("train", "validation", "test")
SOURCES = ("chat", "import", "manual")


@dataclass
class Example:
    messages: list[dict]
    passages: list[dict] | None = None
    label: str | None = None
    tags: list[str] = field(default_factory=list)
    status: str = "active"
    split: str | None = None
    source: str = "manual"
    provenance: dict = field(default_factory=dict)  # conversation_id, message_id, message_time, edited, ...
    id: int | None = None
    created_at: str = ""
    updated_at: str = ""
    content_hash: str = ""
    rejected: str | None = None  # a preference pair: the reply the answer was preferred to

    # ---- views --------------------------------------------------------------------------
    @property
    def system(self) -> str:
        return self.messages[0]["content"] if self.messages and self.messages[0]["role"] == "system" else ""

    @property
    def prompt(self) -> str:
        """The final user turn."""
        return self.messages[-2]["content"] if len(self.messages) >= 2 else ""

    @property
    def answer(self) -> str:
        return self.messages[-1]["content"] if self.messages else ""

    @property
    def context(self) -> list[dict]:
        """Turns before the final user turn (without the system prompt)."""
        return [m for m in self.messages[:-2] if m["role"] != "system"]

    @property
    def conversation_id(self) -> str | None:
        return self.provenance.get("conversation_id")

    @property
    def message_id(self) -> int | None:
        return self.provenance.get("message_id")

    @property
    def is_pair(self) -> bool:
        return self.rejected is not None

    @property
    def kind(self) -> str:
        return "pair" if self.rejected is not None else "example"

    @property
    def edited(self) -> bool:
        return bool(self.provenance.get("edited"))

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "messages": self.messages,
            "passages": self.passages,
            "label": self.label,
            "tags": list(self.tags),
            "status": self.status,
            "split": self.split,
            "source": self.source,
            "provenance": self.provenance,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "content_hash": self.content_hash,
            **({"rejected": self.rejected} if self.rejected is not None else {}),
        }


def validate_messages(messages) -> list[dict]:
    """Check and normalise a chat: [system?] (user, assistant)* user, assistant."""
    if not isinstance(messages, list) or not messages:
        raise ValidationError("messages must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValidationError(f"message {i + 1} is not an object")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValidationError(f"message {i + 1} has role {role!r}; expected system, user or assistant")
        if not isinstance(content, str):
            raise ValidationError(f"message {i + 1} ({role}) has no text content")
        if role == "system" and i != 0:
            raise ValidationError(f"message {i + 1}: a system prompt may only come first")
        out.append({"role": role, "content": content})
    body = out[1:] if out[0]["role"] == "system" else out
    if len(body) < 2 or body[-1]["role"] != "assistant" or body[-2]["role"] != "user":
        raise ValidationError("an example must end with a user message followed by the assistant answer")
    return out


def clean_tags(tags) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = tags.split(",")
    out: list[str] = []
    for t in tags:
        t = str(t).strip()
        if t and t not in out:
            out.append(t)
    return out


def _clean_passages(passages) -> list[dict] | None:
    if not passages:
        return None
    if not isinstance(passages, list):
        raise ValidationError("passages must be a list")
    out = []
    for i, p in enumerate(passages):
        if isinstance(p, Passage):
            p = p.as_dict()
        if not isinstance(p, dict) or not isinstance(p.get("text"), str):
            raise ValidationError(f"passage {i + 1} needs a text")
        q = dict(p)
        q.setdefault("id", i + 1)
        q["source"] = str(q.get("source") or "")
        out.append(q)
    return out


def content_hash(messages: Sequence[dict], passages: Sequence[dict] | None, rejected: str | None = None) -> str:
    """What makes two examples the same: their messages and their passages' texts (and a
    pair's rejected reply: a pair is never the same as the example of its chosen reply)."""
    key = json.dumps(
        [[m["role"], m["content"]] for m in messages]
        + [[p.get("source", ""), p.get("text", "")] for p in (passages or [])]
        + ([["rejected", rejected]] if rejected is not None else []),
        ensure_ascii=False,
    )
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_SPACES = re.compile("[\u00a0\u2007\u202f\u2009\u200a\u3000\t]")
_RUNS = re.compile(r" {2,}")
_BLANKS = re.compile(r"\n{3,}")


def normalised_text(text: str) -> str:
    """The one text normalisation: NFC, plain newlines, no invisible characters, ordinary
    single spaces, no trailing blanks, at most one empty line in a row, stripped. The
    cleaning report's "normalise" fix applies it and `dedup_hash` hashes its result, so a
    cleaned example still counts as the one that was imported. Written for speed, as every
    imported message goes through it."""
    ascii_only = text.isascii()  # NFC and the invisible characters leave ASCII as it is
    if not ascii_only:
        text = unicodedata.normalize("NFC", text)
    if "\r" in text:  # before dropping invisibles: "\r\u200b\n" is two line breaks
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not ascii_only:
        text = _SPACES.sub(" ", _INVISIBLE.sub("", text))
    elif "\t" in text:
        text = text.replace("\t", " ")
    if "\n" in text:
        text = "\n".join(_RUNS.sub(" ", line).rstrip() for line in text.split("\n"))
        if "\n\n\n" in text:
            text = _BLANKS.sub("\n\n", text)
    elif "  " in text:
        text = _RUNS.sub(" ", text)
    return text.strip()


def dedup_hash(messages: Sequence[dict], passages: Sequence[dict] | None, rejected: str | None = None) -> str:
    """What makes an imported example one that is already present: its messages (role and
    normalised text) and its passages' sources and normalised texts. Labels and tags do not
    count. Coarser than `content_hash` (which the cleaning report's exact-duplicate check
    uses): text that differs only in whitespace or Unicode form hashes the same. Each part
    is written with its length, so no text can imitate a boundary. SHA-256 cut to 128 bits
    (32 hex digits): a smaller index, still no collision in any real dataset."""
    parts = [f"{m['role']}:{len(t)}:{t}" for m in messages for t in (normalised_text(m["content"]),)]
    for p in passages or []:
        src, text = str(p.get("source", "")).strip(), normalised_text(str(p.get("text", "")))
        parts.append(f"passage:{len(src)}:{src}:{len(text)}:{text}")
    if rejected is not None:  # examples (no rejected reply) hash as they always did
        text = normalised_text(rejected)
        parts.append(f"rejected:{len(text)}:{text}")
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def to_passages(passages: Sequence[dict] | None) -> list[Passage]:
    known = {"id", "source", "text", "score", "heading", "scores"}
    return [
        Passage(**{"id": i + 1, "source": "", **{k: v for k, v in p.items() if k in known}})
        for i, p in enumerate(passages or [])
    ]


def render_messages(example: Example) -> list[dict]:
    """The messages the trainer sees: the chat's own prompt building for the final user turn
    (system prompt, earlier turns, passages shown as in the chat), then the answer."""
    return build_messages(example.context, example.prompt, example.system, to_passages(example.passages)) + [
        {"role": "assistant", "content": example.answer}
    ]


def preview_text(example: Example, tokenizer) -> str:
    """Exactly the text the trainer tokenizes for this example."""
    return tokenizer.apply_chat_template(render_messages(example), tokenize=False)


def validate_rejected(rejected, messages: list[dict]) -> str | None:
    """A pair's rejected reply: text, not empty, and not the chosen answer itself."""
    if rejected is None:
        return None
    if not isinstance(rejected, str):
        raise ValidationError(f"the rejected reply must be text, got {type(rejected).__name__}")
    if not rejected.strip():
        raise ValidationError("the rejected reply is empty")
    if normalised_text(rejected) == normalised_text(messages[-1]["content"]):
        raise ValidationError("the chosen and rejected replies are the same; a pair needs two different replies")
    return rejected


def make_example(
    messages,
    *,
    passages=None,
    label=None,
    tags=None,
    status="active",
    source="manual",
    provenance=None,
    split=None,
    rejected=None,
) -> Example:
    messages = validate_messages(messages)
    rejected = validate_rejected(rejected, messages)
    if status not in STATUSES:
        raise ValidationError(f"status must be one of {', '.join(STATUSES)}")
    if split is not None and split not in SPLITS:
        raise ValidationError(f"split must be one of {', '.join(SPLITS)}")
    label = None if label is None or str(label).strip() == "" else str(label).strip()
    passages = _clean_passages(passages)
    return Example(
        messages=messages,
        passages=passages,
        label=label,
        tags=clean_tags(tags),
        status=status,
        split=split,
        source=source or "manual",
        provenance=dict(provenance or {}),
        content_hash=content_hash(messages, passages, rejected),
        rejected=rejected,
    )


def chat_example(prompt: str, answer: str, system: str = "", **kw) -> Example:
    messages = ([{"role": "system", "content": system}] if system and system.strip() else []) + [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": answer},
    ]
    return make_example(messages, **kw)


def with_messages(example: Example, messages: list[dict]) -> Example:
    return replace(example, messages=validate_messages(messages))


def pair_example(messages, rejected: str, **kw) -> Example:
    """A preference pair: `messages` end with the chosen answer; `rejected` is the reply it beat."""
    if rejected is None:
        raise ValidationError("a preference pair needs a rejected reply")
    return make_example(messages, rejected=rejected, **kw)
