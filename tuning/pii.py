"""Private data in example text: emails, phone numbers, payment cards that pass the Luhn
check, IPv4/IPv6 addresses; and their redaction (the cleaning report's "pii" check and fix)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{0,4}|\d+\.\d+\.\d+\.\d+)(?![\w:])")
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,5}(?:[ .-]\d{2,5}){1,4}(?![\w])"
    r"|(?<![\w+])\+\d{8,14}(?!\w)"
)
REDACTIONS = {"email": "[EMAIL]", "card": "[CARD]", "ip": "[IP]", "phone": "[PHONE]"}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


@dataclass
class PiiMatch:
    kind: str  # email | phone | card | ip
    start: int
    end: int
    text: str


def find_pii(text: str) -> list[PiiMatch]:
    found: list[PiiMatch] = []

    def free(a: int, b: int) -> bool:
        return all(b <= m.start or a >= m.end for m in found)

    for m in EMAIL.finditer(text):
        found.append(PiiMatch("email", m.start(), m.end(), m.group()))
    for m in CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits) and free(m.start(), m.end()):
            found.append(PiiMatch("card", m.start(), m.end(), m.group()))
    for m in IPV4.finditer(text):
        if free(m.start(), m.end()):
            found.append(PiiMatch("ip", m.start(), m.end(), m.group()))
    for m in IPV6.finditer(text):
        candidate = m.group()
        if sum(c.isalnum() for c in candidate) < 2 or not free(m.start(), m.end()):
            continue
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        found.append(PiiMatch("ip", m.start(), m.end(), candidate))
    for m in PHONE.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        # 9-15 digits (E.164 allows 15); fewer are prices, times, years and dates.
        if 9 <= len(digits) <= 15 and free(m.start(), m.end()):
            found.append(PiiMatch("phone", m.start(), m.end(), m.group()))
    return sorted(found, key=lambda m: m.start)


def redact(text: str, matches: Sequence[PiiMatch] | None = None) -> str:
    matches = find_pii(text) if matches is None else matches
    out, pos = [], 0
    for m in sorted(matches, key=lambda m: m.start):
        out += [text[pos : m.start], REDACTIONS[m.kind]]
        pos = m.end
    return "".join(out) + text[pos:]
