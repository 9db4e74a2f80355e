"""Who is acting, and through which surface, without passing it down every call.

A :class:`Acting` value lives in a context variable for the length of one request (set by
``activities.middleware``), one management command (:func:`command_surface`) or any block of
code (:func:`acting_as`). ``activities.record`` reads it, so the write paths (services, the
console, REST) record activities without an ``actor`` argument on each function.

The actor of a request is resolved *when an activity is recorded*, not when the request starts:
DRF authenticates tokens inside the view and then sets the user on the underlying Django request
(``rest_framework.request.Request.user``'s setter writes ``_request.user``), so reading
``request.user`` late gives the token's user, where reading it in the middleware would give
``AnonymousUser``.

Context variables are per thread and per asyncio task, and are copied into ``sync_to_async``
threads, so concurrent requests never see each other's actor.
"""

from __future__ import annotations

import functools
import getpass
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from activities.choices import Surface

F = TypeVar("F", bound=Callable[..., Any])
_UNSET: Any = object()


@dataclass
class Acting:
    """The actor and surface of the code running now, plus the bookkeeping of one operation.

    ``state`` is what keeps the generic console/REST hooks and the services from recording one
    change twice (``activities.recording``): the types the hooks are handling (``announced``),
    the keys they recorded (``generic_keys``) and the keys services said they covered
    (``covered``). Nested contexts share it.
    """

    surface: str = Surface.SYSTEM
    user: Any = None
    request: Any = None
    actor_name: str = ""
    address: str = ""
    suppressed: bool = False
    state: dict[str, set] = field(
        default_factory=lambda: {"announced": set(), "generic_keys": set(), "covered": set()}
    )

    def actor(self) -> Any:
        """The acting user: the one given, else the request's (authenticated) user, else ``None``."""
        if self.user is not None:
            return self.user
        user = getattr(self.request, "user", None) if self.request is not None else None
        if user is not None and getattr(user, "is_authenticated", False):
            return user
        return None


_current: ContextVar[Acting | None] = ContextVar("fleet_activity_context", default=None)


def current() -> Acting:
    """The context in force, or a default one (surface ``system``, nobody acting)."""
    return _current.get() or Acting()


def has_context() -> bool:
    return _current.get() is not None


@contextmanager
def _pushed(acting: Acting) -> Iterator[Acting]:
    token = _current.set(acting)
    try:
        yield acting
    finally:
        _current.reset(token)


@contextmanager
def acting_as(
    user: Any = _UNSET,
    surface: str | None = None,
    *,
    request: Any = _UNSET,
    actor_name: str | None = None,
    address: str | None = None,
) -> Iterator[Acting]:
    """Run a block as ``user`` through ``surface``; what is not given is kept from the outer context.

    ``acting_as(surface=Surface.YAML)`` inside a REST request keeps the request's user.
    """
    outer = _current.get()
    base = outer or Acting()
    changes: dict[str, Any] = {}
    if user is not _UNSET:
        changes["user"] = user
        changes["request"] = None if request is _UNSET else request
    elif request is not _UNSET:
        changes["request"] = request
    if surface is not None:
        changes["surface"] = surface
    if actor_name is not None:
        changes["actor_name"] = actor_name
    if address is not None:
        changes["address"] = address
    with _pushed(replace(base, **changes)) as acting:
        yield acting


@contextmanager
def suppressed() -> Iterator[None]:
    """Record nothing inside the block: the caller records one summarising activity instead.

    Used by the spec engine: an apply is recorded per kind of object with the whole plan, not
    once more by every service it calls.
    """
    base = _current.get() or Acting()
    with _pushed(replace(base, suppressed=True)):
        yield


def operator_name() -> str:
    """The operating-system account running a command (what the trail names as its actor)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return os.environ.get("USER", "") or f"uid {os.getuid()}"


@contextmanager
def command_surface(user: Any = None) -> Iterator[Acting]:
    """The context of a ``manage.py`` command: surface ``command``, the OS account as actor name.

    ``user`` (a Fleet user the command acts for, such as ``live_query --user``) is the actor
    when given; the operator's account name is kept either way.
    """
    with acting_as(user, Surface.COMMAND, actor_name=operator_name(), address="") as acting:
        yield acting


def as_command(handle: F) -> F:
    """Decorate a command's ``handle`` so everything it records has surface ``command``."""

    @functools.wraps(handle)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with command_surface():
            return handle(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
