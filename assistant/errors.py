"""Errors a user can act on. Each message says what went wrong and what to do about it."""


class TailorError(Exception):
    """Base class for errors whose message is meant to be shown to the user as is."""


class ModelError(TailorError):
    """The chat model could not be found, converted or loaded."""


class NotFoundError(TailorError):
    """A conversation, message, adapter or other record does not exist."""


class ValidationError(TailorError):
    """Input (a setting, a file, a request) is not acceptable."""
