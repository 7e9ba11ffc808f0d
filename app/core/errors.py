"""Domain errors: what went wrong, in words a caller can act on, with no HTTP in them.

Services, runs and the learning code raise these; `app/api/problems.py` maps each class to
one status code and an RFC 9457 problem document, in one place.  `slug` is the stable part of
the problem's `type`; `field` names the input at fault; `extra` carries machine-readable
details (a row number, the id of the run already open).
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error a caller is meant to see."""

    default_slug = "error"
    title = "Error"

    def __init__(self, detail: str, *, field: str | None = None, slug: str | None = None, title: str | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.slug = slug or self.default_slug
        if title is not None:
            self.title = title
        self.extra = extra


class NotFound(DomainError):
    """The thing named does not exist (or, to this caller, might as well not)."""

    default_slug = "not-found"
    title = "Not found"

    @classmethod
    def of(cls, what: str, ident: object, *, field: str | None = None, detail: str | None = None) -> "NotFound":
        """`NotFound.of("task", "tickets", field="task")` -> slug unknown-task, title "Unknown task"."""
        return cls(detail or f"No {what} {ident!r}.", field=field, slug=f"unknown-{what}", title=f"Unknown {what}")


class Conflict(DomainError):
    """The request is valid but clashes with the current state (a duplicate, an open run)."""

    default_slug = "conflict"
    title = "Conflict"


class Invalid(DomainError):
    """The input is wrong; `field` says where.  Nothing was changed."""

    default_slug = "validation"
    title = "Invalid request"

    def __init__(self, field: str, detail: str, *, slug: str | None = None, title: str | None = None,
                 **extra: Any) -> None:
        super().__init__(detail, field=field, slug=slug, title=title, **extra)


class TooLarge(DomainError):
    """The input is over a size limit."""

    default_slug = "too-large"
    title = "Too large"


class Forbidden(DomainError):
    """The caller is known but may not do this."""

    default_slug = "forbidden"
    title = "Forbidden"


class RetryLater(DomainError):
    """Worth trying again after `retry_after_s` seconds (0: no advice)."""

    def __init__(self, detail: str, *, retry_after_s: int = 1, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.retry_after_s = retry_after_s


class Unavailable(RetryLater):
    """Temporarily unable to answer (model still loading, queue full, database down)."""

    default_slug = "unavailable"
    title = "Service unavailable"


class RateLimited(RetryLater):
    """Too many requests from this caller."""

    default_slug = "rate-limited"
    title = "Too many requests"


class Overloaded(Unavailable):
    """Shed load: the queue is full."""

    default_slug = "overloaded"
    title = "Overloaded"


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached (down, restarting, or busy); nothing was committed."""

    default_slug = "database-unavailable"
    title = "Database unavailable"
