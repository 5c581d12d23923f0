"""Errors raised by the amoCRM client; each message says what happened and what to do."""

from __future__ import annotations


class AmoError(Exception):
    """Base of every amoCRM client error."""


class AmoHTTPError(AmoError):
    """An answer the client could not turn into a result (after its retries)."""

    def __init__(self, status: int, detail: str) -> None:
        # Status 0: no answer at all (connection refused, DNS, timeout after the retries).
        super().__init__(f"amoCRM answered HTTP {status}: {detail}" if status
                         else f"amoCRM could not be reached: {detail}")
        self.status = status
        self.detail = detail


class AccountBlocked(AmoError):
    """amoCRM answered 403: the account's traffic is stopped until an admin clears it."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message  # the stop's own short reason, as `amocrm status` shows


class ReauthorizationRequired(AmoError):
    """The token can no longer be used or refreshed; an admin must connect the account again."""


class AccessDenied(AmoError):
    """403 on a call that needs more rights (e.g. users for a non-admin); traffic not stopped."""
