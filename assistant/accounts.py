"""Accounts for a team (issue #17): with `TAILOR_AUTH` set, each user's conversations are
their own; the dataset, documents and adapters stay shared, and deleting or restoring those
(and anyone's conversation) is for admins.

Who is asking is a user name per request, never a parameter a caller could forge: the web app's
login (Gradio puts the logged-in name on each event's request; ui/ registers a source that
reads it, since this package imports no web framework), or the user a `/v1` key is bound to
(serving/ sets it around each request with `acting_as`). Code that runs with no such name (the
CLI, the app's own background threads) acts as the workspace's owner and sees everything: it
runs on the machine that holds the database anyway.

The rules, for a request by user U when accounts are on:
- a conversation U started (web or `/v1`) is U's: only U lists, reads, continues, rates,
  edits, renames, deletes and restores it; to anyone else it "does not exist" (no hint that
  it does);
- conversations from before accounts were turned on, or from `/v1` keys bound to no user,
  have no owner: only admins see them;
- admins may also delete and restore anyone's conversation (by id), and delete or restore the
  shared dataset, documents and adapters; other users get a clear "only an admin may ..." error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from .errors import TailorError

# The user `/v1` requests act as when their key is bound to no user (or none is needed, on
# loopback): their conversations belong to this name, so such a client can continue its own
# conversations, and no web user sees them.
API_USER = "api"

T = TypeVar("T")

_acting: ContextVar[str | None] = ContextVar("tailor_acting_user", default=None)
_sources: list[Callable[[], str | None]] = []


class AccessDenied(TailorError):
    """The user may not do this (an admin's action, asked for by someone else)."""


@dataclass(frozen=True)
class Viewer:
    """Who a request acts as. `user` None: no accounts, or the workspace's owner (CLI, the
    app's own threads): everything is visible."""

    user: str | None
    admin: bool = False

    @property
    def restricted(self) -> bool:
        return self.user is not None

    def may_read(self, owner: str | None) -> bool:
        if not self.restricted:
            return True
        return owner == self.user or (owner is None and self.admin)

    def may_delete(self, owner: str | None) -> bool:
        return self.may_read(owner) or self.admin


OWNER = Viewer(None, admin=True)  # no accounts, or the local owner of the workspace


def add_user_source(source: Callable[[], str | None]) -> None:
    """Register where a request's user name can be read (ui/ registers Gradio's logged-in
    user). Sources are asked in order after an explicit `acting_as`. Idempotent."""
    if source not in _sources:
        _sources.append(source)


@contextmanager
def acting_as(user: str | None) -> Iterator[None]:
    """Run the block as `user` (serving/ wraps each `/v1` request in it)."""
    token = _acting.set(user)
    try:
        yield
    finally:
        _acting.reset(token)


def current_user() -> str | None:
    """The user name of the request being served here, or None (CLI, background threads)."""
    user = _acting.get()
    if user is not None:
        return user
    for source in _sources:
        try:
            found = source()
        except Exception:  # noqa: BLE001 - a source that cannot tell says nothing
            found = None
        if found:
            return found
    return None


class Accounts:
    """The users of `TAILOR_AUTH` and which of them are admins (`TAILOR_ADMINS`, by default the
    first user listed). `enabled` is False without `TAILOR_AUTH`: one person, no isolation."""

    def __init__(self, users: list[str] | tuple[str, ...] = (), admins: list[str] | tuple[str, ...] | None = None):
        self.users = tuple(dict.fromkeys(users))
        wanted = tuple(admins) if admins else self.users[:1]
        unknown = [a for a in wanted if a not in self.users]
        if unknown:
            raise ValueError(
                f"TAILOR_ADMINS names {', '.join(unknown)}, who {'is' if len(unknown) == 1 else 'are'} not"
                f" among TAILOR_AUTH's users ({', '.join(self.users) or 'none'})"
            )
        self.admins = frozenset(wanted)

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    def viewer(self, user: str | None = None) -> Viewer:
        """Who the current request acts as (`user` given: that user)."""
        if not self.enabled:
            return OWNER
        user = current_user() if user is None else user
        if user is None:
            return OWNER
        return Viewer(user, admin=user in self.admins)

    def owner_for_new(self) -> str | None:
        """The owner to record on a conversation started now (None: no accounts, or the CLI)."""
        return self.viewer().user

    def require_admin(self, what: str) -> None:
        """Refuse `what` ("delete documents") unless the current request is by an admin or by
        the workspace's owner (CLI); with no accounts everyone may."""
        viewer = self.viewer()
        if viewer.restricted and not viewer.admin:
            admins = ", ".join(sorted(self.admins))
            raise AccessDenied(f"only an admin may {what} (admins: {admins}); you are signed in as {viewer.user}")


NO_ACCOUNTS = Accounts()


def as_user(user: str | None, fn: Callable[..., T]) -> Callable[..., T]:
    """`fn`, run as `user` wherever it is called (serving/ hands it to a worker thread)."""

    @functools.wraps(fn)
    def run(*args, **kwargs) -> T:
        with acting_as(user):
            return fn(*args, **kwargs)

    return run
