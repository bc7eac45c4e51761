"""Reading an imported file's text: its encoding (UTF-8, with or without a byte-order mark,
or UTF-16, with or without one), checked for the whole file before anything is imported,
and its lines."""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

from assistant.errors import ValidationError

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


def text_lines(path: Path, encoding: str) -> Iterator[tuple[int, str, int]]:
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
