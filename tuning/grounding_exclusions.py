"""The exclusion list: questions and gold answers that must never appear in generated
grounding examples (an evaluation set's; for the demo, those of facts.jsonl and
unanswerable.jsonl). A candidate is dropped when its question normalises to an excluded one (or
has the same content words), or when its answer holds an excluded gold answer (or its span is
part of one). Otherwise the tuned model would look like it reads when it remembered.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from assistant.errors import ValidationError

from .question_filter import normalise

# ---- the exclusion list -----------------------------------------------------------------------
_STOP = set(
    "a an the is are was were do does did of to in on for at by what which who how when where i you your my".split()
)


def _content(question: str) -> frozenset[str]:
    return frozenset(w for w in normalise(question).split() if w not in _STOP)


@dataclass
class Exclusions:
    """Questions and gold answers that must never appear in generated examples (an evaluation
    set's). Compared after `normalise`."""

    questions: set[str] = field(default_factory=set)
    answers: set[str] = field(default_factory=set)
    contents: set[frozenset[str]] = field(default_factory=set)

    @classmethod
    def of(cls, questions: Iterable[str] = (), answers: Iterable[str] = ()) -> Exclusions:
        out = cls()
        out.add(questions, answers)
        return out

    def add(self, questions: Iterable[str] = (), answers: Iterable[str] = ()) -> Exclusions:
        for q in questions:
            if normalise(q):
                self.questions.add(normalise(q))
                if len(_content(q)) >= 2:
                    self.contents.add(_content(q))
        self.answers |= {normalise(a) for a in answers if normalise(a)}
        return self

    @classmethod
    def from_records(cls, records: Iterable[Mapping]) -> Exclusions:
        """From evaluation lines: `question` (or `prompt`), `answer`, `aliases`."""
        questions, answers = [], []
        for r in records:
            q = r.get("question") or r.get("prompt")
            if isinstance(q, str):
                questions.append(q)
            for a in [r.get("answer"), *(r.get("aliases") or [])]:
                if isinstance(a, str):
                    answers.append(a)
        return cls.of(questions, answers)

    @classmethod
    def from_files(cls, paths: Iterable[Path | str]) -> Exclusions:
        """From JSON-lines files of evaluation questions (facts.jsonl-style)."""
        records: list[dict] = []
        for path in paths:
            path = Path(path)
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ValidationError(f"cannot read the exclusion list {path}: {exc.strerror or exc}") from exc
            for n, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise ValidationError(f"{path.name} line {n} is not JSON: {exc}") from exc
                if isinstance(record, dict):
                    records.append(record)
        return cls.from_records(records)

    def merged(self, other: Exclusions | None) -> Exclusions:
        if other is None:
            return self
        return Exclusions(
            self.questions | other.questions, self.answers | other.answers, self.contents | other.contents
        )

    def __bool__(self) -> bool:
        return bool(self.questions or self.answers)

    def excludes_question(self, question: str) -> bool:
        return normalise(question) in self.questions or _content(question) in self.contents

    def excludes_answer(self, answer: str, span: str) -> bool:
        """The generated answer holds a gold answer, or the span is part of one."""
        norm_answer, norm_span = f" {normalise(answer)} ", f" {normalise(span)} "
        return any(
            f" {gold} " in norm_answer or (norm_span.strip() and norm_span in f" {gold} ") for gold in self.answers
        )

    def summary(self) -> dict:
        return {"questions": len(self.questions), "answers": len(self.answers)}
