"""Error text for humans: every failure Tributary reports is one line."""

from __future__ import annotations

from pydantic import ValidationError


class PermanentError(Exception):
    """An error a retry cannot fix (settings, model, collection mismatch): workers exit EXIT_PERMANENT."""


def one_line(exc: BaseException) -> str:
    """The message of an error on one line (pymilvus wraps its message in a repr)."""
    message = getattr(exc, "message", None) if type(exc).__name__ == "MilvusException" else None
    return " ".join(str(message or exc).split()) or type(exc).__name__


def explain(error: ValidationError, default: str = "invalid event") -> str:
    """A pydantic error as one short line: ``field: message; field: message``."""
    errors = error.errors(include_url=False)
    # An optional field is a union with None: its "should be None" branch says nothing useful.
    meaningful = [e for e in errors if e.get("type") != "none_required"] or errors
    parts: list[str] = []
    for item in meaningful:
        loc = item.get("loc", ())
        # The first element is the field; union branch tags (e.g. "constrained-int") are noise.
        where = str(loc[0]) if loc else "event"
        message = item.get("msg", "invalid").removeprefix("Value error, ")
        part = f"{where}: {message}"
        if part not in parts:
            parts.append(part)
    return "; ".join(parts) or default
