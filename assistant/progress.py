"""One progress callback for every long job (import, cleaning, export, snapshot, indexing, evals).

    progress(done, total=None, message="")

- `done`: how much is finished, in the job's own unit (bytes, rows, examples, replies), or a
  fraction with `total=1.0` for a job made of steps of different kinds;
- `total`: how much there is in that unit; None while it is not known;
- `message`: what is happening now ("embedding examples"); "" says nothing new.

Counts rather than a fraction, so that a caller shows units ("3.1 MB / 12 MB", "400/1000
rows": tqdm and gr.Progress((done, total)) take them as they are) and the fraction is one
division away (`done / total`). A job calls it as often as is cheap (after each batch, not
each row) and at the end with done == total; the callback must be quick and must not raise.
A long job takes `progress: Progress = no_progress` and calls it without checking for None.

Adapters live with their front ends: the CLI's tqdm bar is `cli/progress.py`."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def __call__(self, done: float, total: float | None = None, message: str = "") -> None: ...


def no_progress(done: float, total: float | None = None, message: str = "") -> None:
    """The default progress: reports nothing."""


def scaled(progress: Progress, start: float, stop: float) -> Progress:
    """A part of a job measured as a fraction: the part's own (done, total) becomes the stretch
    from `start` to `stop` of its parent's total of 1.0, with the part's message."""

    def part(done: float, total: float | None = None, message: str = "") -> None:
        frac = done / total if total else 0.0
        progress(start + (stop - start) * min(1.0, max(0.0, frac)), 1.0, message)

    return part
