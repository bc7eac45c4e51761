"""The web UI's adapter for `assistant.progress.Progress`: a job's progress drawn on the
`gr.Progress` bar of the event that runs it (the CLI's adapter is cli/progress.py)."""

from __future__ import annotations

from assistant.progress import Progress


def on_bar(bar, *, desc: str = "", unit: str | None = None) -> Progress:
    """A Progress for the gr.Progress `bar`: counts shown as (done, total) in `unit` when one
    is given, otherwise the fraction done; beside it the job's message, or `desc`."""

    def progress(done: float, total: float | None = None, message: str = "") -> None:
        text = message or desc
        if unit is not None:
            bar((done, total), desc=text, unit=unit)
        else:
            bar(done / total if total else None, desc=text)

    return progress
