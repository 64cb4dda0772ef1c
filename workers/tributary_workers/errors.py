"""Error text for humans: every failure Tributary reports is one line."""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """The message of an error on one line (pymilvus wraps its message in a repr)."""
    message = getattr(exc, "message", None) if type(exc).__name__ == "MilvusException" else None
    return " ".join(str(message or exc).split()) or type(exc).__name__
