"""Bring your old chats: conversations exported from ChatGPT or Open WebUI, into the log.

Accepted: ChatGPT's `conversations.json` (Settings → Data controls → Export), or the export's
.zip that holds it; Open WebUI's export (Settings → Chats → Export chats), a list of chat
records, or one chat alone. The shapes and how each is read are in assistant/chat_formats.py:
only the branch each conversation last showed is imported (not regenerated replies).

User and assistant text is kept, with each message's time and, for replies, the model that wrote
them there (the messages' `model` column; `adapter` stays empty; `source` is "import:chatgpt" or
"import:openwebui"). System, tool and hidden messages, and empty ones, are left out; images and
files are left out with a note. Two messages of one role in a row (a reply split around a tool
call) become one.

A file is imported all or nothing, in one transaction: a file that is not UTF-8 JSON, is in
neither shape, is over MAX_IMPORT_BYTES, or has one malformed conversation (a message without
content, a branch pointing at a message that is not there) is refused whole with the reason and
where, and nothing is written. Conversations already imported (the same export id: a
conversation continued since is not updated) and ones with no user or assistant text are
skipped and counted."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .chat_formats import LeftOut, Malformed, detect_format, kind_of, parse_chatgpt, parse_openwebui
from .conversations import ConversationLog, ImportedConversation
from .errors import ValidationError

# The largest export read: a .json, or the conversations.json inside a .zip (the zip itself,
# images and all, may be larger). Parsed JSON takes several times its size in memory.
MAX_IMPORT_BYTES = 200_000_000
FORMATS = ("chatgpt", "openwebui")
FORMAT_NAMES = {"chatgpt": "ChatGPT export", "openwebui": "Open WebUI export"}


@dataclass
class ParsedExport:
    """What an export holds, before anything is stored."""

    format: str  # "chatgpt" or "openwebui"
    conversations: list[ImportedConversation]
    empty: int = 0  # conversations with no user or assistant text
    notes: list[str] = field(default_factory=list)  # what was left out, in words


@dataclass
class ChatImportResult:
    format: str
    imported: int  # new conversations
    duplicates: int  # already in the log (imported before), or twice in the file
    empty: int
    messages: int  # messages in the new conversations
    conversation_ids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: "Imported 3 conversations (ChatGPT export, 14 messages; 1 already here)"."""
        noun = "conversation" if self.imported == 1 else "conversations"
        details = [f"{FORMAT_NAMES[self.format]}, {self.messages} message{'' if self.messages == 1 else 's'}"]
        if self.duplicates:
            details.append(f"{self.duplicates} already here")
        if self.empty:
            details.append(f"{self.empty} without any text skipped")
        text = f"Imported {self.imported} {noun} ({'; '.join(details)})"
        notes = "; ".join(self.notes)
        return text + (f". {notes[:1].upper()}{notes[1:]}." if notes else "")


def import_chats(log: ConversationLog, path: Path | str, fmt: str = "auto") -> ChatImportResult:
    """Import the export at `path` (.json, or ChatGPT's .zip) into `log`, all or nothing."""
    parsed = read_export(path, fmt)
    source = f"import:{parsed.format}"
    ids = log.add_imported(parsed.conversations, source=source)
    new = [(cid, conv) for cid, conv in zip(ids, parsed.conversations) if cid is not None]
    return ChatImportResult(
        format=parsed.format,
        imported=len(new),
        duplicates=len(ids) - len(new),
        empty=parsed.empty,
        messages=sum(len(conv.messages) for _, conv in new),
        conversation_ids=[cid for cid, _ in new],
        notes=parsed.notes,
    )


def read_export(path: Path | str, fmt: str = "auto") -> ParsedExport:
    """The conversations in the export at `path`, nothing stored (see parse_export)."""
    path = Path(path)
    if not path.exists():
        raise ValidationError(f"{path} does not exist")
    if not path.is_file():
        raise ValidationError(f"{path} is not a file: choose the export's conversations .json or .zip")
    with path.open("rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"
    if is_zip:
        data, inner = _from_zip(path)
        return parse_export(data, fmt, name=f"{path.name}: {inner}")
    size = path.stat().st_size
    if size > MAX_IMPORT_BYTES:
        raise ValidationError(f"{path.name} is {size / 1e6:.0f} MB, over the {MAX_IMPORT_BYTES / 1e6:.0f} MB limit")
    return parse_export(path.read_bytes(), fmt, name=path.name)


def _from_zip(path: Path) -> tuple[bytes, str]:
    """conversations.json from a ChatGPT export .zip (or the only .json in some other zip)."""
    limit = f"over the {MAX_IMPORT_BYTES / 1e6:.0f} MB limit"
    try:
        with zipfile.ZipFile(path) as archive:
            files = [i for i in archive.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX/")]
            chosen = [i for i in files if PurePosixPath(i.filename).name == "conversations.json"]
            if not chosen:
                chosen = [i for i in files if i.filename.lower().endswith(".json")]
                if len(chosen) != 1:
                    raise ValidationError(
                        f"{path.name} is a zip without conversations.json (a ChatGPT export has one at its top level)"
                    )
            info = min(chosen, key=lambda i: i.filename.count("/"))
            if info.file_size > MAX_IMPORT_BYTES:
                raise ValidationError(f"{info.filename} in {path.name} is {info.file_size / 1e6:.0f} MB, {limit}")
            with archive.open(info) as member:
                data = member.read(MAX_IMPORT_BYTES + 1)  # the header's size may lie
            if len(data) > MAX_IMPORT_BYTES:
                raise ValidationError(f"{info.filename} in {path.name} is {limit}")
            return data, info.filename
    except (zipfile.BadZipFile, EOFError, OSError, RuntimeError) as exc:  # RuntimeError: encrypted
        raise ValidationError(f"{path.name} is not a readable zip file ({exc})") from None


def parse_export(data: bytes, fmt: str = "auto", *, name: str = "the file") -> ParsedExport:
    """The conversations in an export's bytes; `fmt`: "auto", "chatgpt" or "openwebui"."""
    if fmt not in ("auto", *FORMATS):
        raise ValidationError(f"unknown export format {fmt!r}: use auto, chatgpt or openwebui")
    if len(data) > MAX_IMPORT_BYTES:
        raise ValidationError(f"{name} is over the {MAX_IMPORT_BYTES / 1e6:.0f} MB limit")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"{name} is not UTF-8 text (byte 0x{data[exc.start]:02x} at position {exc.start}): "
            "an export from ChatGPT or Open WebUI is a UTF-8 .json file"
        ) from None
    if not text.strip():
        raise ValidationError(f"{name} is empty")
    try:
        top = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{name} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    items = top if isinstance(top, list) else [top]
    if not items:
        raise ValidationError(f"{name} is an empty list: there are no conversations in it")
    found = fmt if fmt != "auto" else detect_format(top, name)
    parse: Callable[[dict, LeftOut], ImportedConversation] = parse_chatgpt if found == "chatgpt" else parse_openwebui
    parsed = ParsedExport(found, [])
    notes = LeftOut()
    for n, item in enumerate(items, 1):
        where = f"conversation {n}"
        if not isinstance(item, dict):
            raise ValidationError(f"{name}: {where} is {kind_of(item)}, not a conversation; nothing was imported")
        title = item.get("title")
        if isinstance(title, str) and title.strip():
            where += f" (“{' '.join(title.split())[:60]}”)"
        try:
            conv = parse(item, notes)
        except Malformed as exc:
            raise ValidationError(
                f"{name}: {where}: {exc}. Nothing was imported (a file goes in whole or not at all)"
            ) from None
        if conv.messages:
            parsed.conversations.append(conv)
        else:
            parsed.empty += 1
    parsed.notes = notes.lines()
    return parsed
