"""Errors a user can act on. Each message says what went wrong and what to do about it."""

import errno
import os
import re


class TailorError(Exception):
    """Base class for errors whose message is meant to be shown to the user as is."""


class ModelError(TailorError):
    """The chat model could not be found, converted or loaded."""


class EngineUnavailable(ModelError):
    """The remote engine (TAILOR_ENGINE_URL) could not be reached or refused a request; `status`
    is its HTTP status when it answered."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class NotFoundError(TailorError):
    """A conversation, message, adapter or other record does not exist."""


class ValidationError(TailorError):
    """Input (a setting, a file, a request) is not acceptable."""


class StorageError(TailorError):
    """A file could not be written: the disk is full, the folder is read-only, no permission."""


def write_failed(dest, exc: BaseException) -> StorageError:
    """The error to raise when writing `dest` failed with `exc` (an OSError, or a library's own
    error that wraps one: sqlite3's "database or disk is full", safetensors' "os error 28").
    Names the path and the cause in words, and says what to do. Callers clean up first: the
    message promises that nothing was left at `dest`."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if not isinstance(code, int):
        found = re.search(r"os error (\d+)", text)
        code = int(found.group(1)) if found else None
    if code is None:
        lowered = text.lower()
        if "disk is full" in lowered or "disk full" in lowered:
            code = errno.ENOSPC
        elif "readonly" in lowered or "read-only" in lowered:
            code = errno.EROFS
    reason = os.strerror(code).lower() if code else (text or type(exc).__name__)
    hint = (
        {
            errno.ENOSPC: "free some space or choose another destination",
            errno.EDQUOT: "free some space or choose another destination",
            errno.EROFS: "that place is read-only; choose another destination",
            errno.EACCES: "no permission to write there; choose another destination",
            errno.EPERM: "no permission to write there; choose another destination",
        }.get(code)
        if code is not None
        else None
    )
    return StorageError(
        f"could not write {dest}: {reason}"
        + (f" ({hint})" if hint else "")
        + ". Nothing was left there, and the workspace is unchanged."
    )
