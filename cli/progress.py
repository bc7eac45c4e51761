"""The CLI's adapter for `assistant.progress.Progress`: a tqdm bar on stderr, used as
`with tqdm_progress("importing", unit="B", unit_scale=True) as progress: import_file(..., progress=progress)`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from assistant.progress import Progress


@contextmanager
def tqdm_progress(
    desc: str = "",
    *,
    total: float | None = None,
    unit: str = "it",
    unit_scale: bool = False,
    disable: bool = False,
) -> Iterator[Progress]:
    """A Progress that draws a tqdm bar on stderr (`disable`: draws nothing, e.g. with --json).
    A job's `total` replaces the bar's; its message is shown after the bar."""
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, file=sys.stderr, disable=disable) as bar:

        def progress(done: float, total: float | None = None, message: str = "") -> None:
            if total is not None:
                bar.total = total
            bar.n = done
            if message:
                bar.set_postfix_str(message, refresh=False)
            bar.refresh()

        yield progress
