"""Errors a user can fix, reported by the command line as one line (no traceback).

Raise :class:`UserError` (or one of its subclasses) for bad input, a missing file, an unreachable
service or an unknown name: ``centernet`` prints ``error: <message>`` and exits with status 2
(``--verbose`` shows the traceback). Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user asked for; the message says what and how to fix it."""

    exit_code = 2


class JobFailed(UserError):
    """A job (training, search, precompute) failed; the message is its one-line cause and where
    the full log is. Exit status 1."""

    exit_code = 1
