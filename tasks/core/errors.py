"""Errors meant for the people who run faceset, most of whom are not programmers.

The command line prints these as `error: <what went wrong>` and `what to do: <hint>`
without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class FacesetError(Exception):
    """Something the user can fix: says what went wrong and what to do about it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\nwhat to do: {self.hint}" if self.hint else self.message
