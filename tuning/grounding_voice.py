"""The voice of the user's pairs, which the grounding examples' answers wear: the opener and
the sign-off shared by at least half of the training answers ("Ahoy, rider!" ... "Fair winds
and smooth roads! — Lantern Bay Bikes"), and the system prompt most of them share, detected
from the dataset version lines the tune trains on. A voice found in fewer than three answers
is none: the answers are then the bare sentence that holds the span.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


# ---- the voice --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Voice:
    opener: str = ""
    signoff: str = ""
    system: str = ""  # the system prompt most training examples share, if any

    def wrap(self, sentence: str) -> str:
        return " ".join(p for p in (self.opener, sentence, self.signoff) if p)

    def as_dict(self) -> dict:
        return {"opener": self.opener, "signoff": self.signoff, "system_prompt": bool(self.system)}


_END = (".", "!", "?", ",", ":", "…")


def _common(prefixes: Iterable[str], need: int) -> str:
    counts = Counter(prefixes)
    best = ""
    for text, n in counts.items():
        if n >= need and len(text) > len(best):
            best = text
    return best


def detect_voice(answers: Sequence[str], systems: Sequence[str] = (), *, share: float = 0.5) -> Voice:
    """The opener and sign-off that at least `share` of the answers (and at least 3) use: the
    longest run of whole words at the start ending in punctuation ("Ahoy, rider!"), and at the
    end starting a sentence ("Fair winds and smooth roads! — Lantern Bay Bikes")."""
    answers = [a.strip() for a in answers if a and a.strip()]
    need = max(3, int(share * len(answers) + 0.999))
    if len(answers) < 3:
        return Voice()
    heads, tails = [], []
    for a in answers:
        words = a.split()
        for n in range(1, min(12, len(words) - 1) + 1):
            if words[n - 1].endswith(_END):
                heads.append(" ".join(words[:n]))
        for n in range(1, min(16, len(words) - 1) + 1):
            if words[-n - 1].endswith((".", "!", "?")):
                tails.append(" ".join(words[-n:]))
    opener, signoff = _common(heads, need), _common(tails, need)
    counted = Counter(s.strip() for s in systems if s and s.strip())
    system = ""
    if counted:
        text, n = counted.most_common(1)[0]
        system = text if n >= need else ""
    return Voice(opener, signoff, system)


def voice_of(records: Iterable[Mapping]) -> Voice:
    """The voice of dataset version lines (`messages`, the answer last)."""
    answers, systems = [], []
    for r in records:
        messages = r.get("messages") or []
        if messages and messages[-1].get("role") == "assistant":
            answers.append(str(messages[-1].get("content") or ""))
            systems.append(messages[0]["content"] if messages[0].get("role") == "system" else "")
    return detect_voice(answers, systems)
