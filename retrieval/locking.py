"""The lock that serialises changes to the knowledge base: one thread at a time in this process
(an RLock), one process at a time across processes sharing the workspace (an flock on
`indexes/knowledge.lock`). Readers take only the thread lock."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType


class KnowledgeLock:
    def __init__(self, path: Path):
        self.path = path
        self.thread = threading.RLock()  # readers (search, stats) hold only this one
        self._depth = 0  # exclusive() re-entered by this thread (a write that re-checks the index)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """This thread and this process alone may change the knowledge or its index files."""
        with self.thread:
            fcntl: ModuleType | None
            try:
                import fcntl as _fcntl

                fcntl = _fcntl
            except ImportError:  # Windows: threads are still serialised
                fcntl = None
            if fcntl is None or self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            with open(self.path, "a+") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
                    fcntl.flock(fh, fcntl.LOCK_UN)
