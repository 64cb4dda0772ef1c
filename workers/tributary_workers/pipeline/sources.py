"""Sources: where documents come from (a local tree, a list of URLs, an S3-compatible bucket).

Every source has the stage shape used across the data plane: configuration in the constructor,
expensive set-up (clients, connection pools) in ``warm_up()``, then ``list()`` and ``read()``.
``list()`` and ``read()`` warm the source up on first use, so calling ``warm_up()`` is only
about failing fast.

Errors come in two kinds:
- ``SourceError`` is fatal for the whole run (missing path, unreachable bucket, bad URI) and
  carries a one-line message for the user.
- ``DocumentError`` from ``read()`` is one document's failure; the batch records it and goes on.

Include/exclude globs are matched against ``doc_id`` (see ``DocIdFilter``); exclude wins.
"""

from __future__ import annotations

import glob
import mimetypes
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from tributary_workers.documents import DocumentError, DocumentRef, RawDocument


class SourceError(Exception):
    """A fatal source problem (missing path, unreachable bucket, bad URI); one line for the user."""


class Source(Protocol):
    def warm_up(self) -> None: ...

    def list(self) -> Iterator[DocumentRef]:
        """The documents to ingest, sorted by doc_id, include/exclude globs applied."""
        ...

    def read(self, ref: DocumentRef) -> RawDocument:
        """The bytes of one listed document; raises DocumentError for that document only."""
        ...


def open_source(
    uri: str | Sequence[str],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    storage_options: dict[str, Any] | None = None,
) -> Source:
    """The source for a URI: a path, glob or file:// URI, http(s) URL(s), or s3://bucket/prefix."""
    from tributary_workers.pipeline.remote_sources import (  # aiohttp/fsspec only when used
        HttpSource,
        S3Source,
    )

    doc_filter = DocIdFilter(include, exclude)
    if not isinstance(uri, str):
        return HttpSource(list(uri), doc_filter=doc_filter, storage_options=storage_options)
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        return HttpSource([uri], doc_filter=doc_filter, storage_options=storage_options)
    if scheme == "s3":
        return S3Source(uri, doc_filter=doc_filter, storage_options=storage_options)
    if scheme in ("", "file"):
        return LocalSource(uri, doc_filter=doc_filter)
    raise SourceError(f"unsupported source URI scheme {scheme!r} in {uri!r} (use a path, file://, http(s):// or s3://)")


# ---------------------------------------------------------------------------------------------
# include / exclude


class DocIdFilter:
    """Include/exclude globs over doc_ids; an empty include list accepts everything, exclude wins.

    Glob syntax: ``*`` and ``?`` stay within one path segment, ``[abc]``/``[!abc]`` are character
    classes, ``**`` crosses segments and ``**/`` also matches no directory at all (so
    ``docs/**/*.md`` matches ``docs/a.md``). A pattern without ``/`` is matched against the last
    segment, as in .gitignore, so ``*.md`` selects Markdown files at any depth.
    """

    def __init__(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
        self._include = [_compile_glob(pattern) for pattern in include]
        self._exclude = [_compile_glob(pattern) for pattern in exclude]

    def accepts(self, doc_id: str) -> bool:
        if any(_glob_matches(pattern, doc_id) for pattern in self._exclude):
            return False
        return not self._include or any(_glob_matches(pattern, doc_id) for pattern in self._include)


@dataclass(frozen=True)
class _Glob:
    regex: re.Pattern[str]
    basename_only: bool


def _compile_glob(pattern: str) -> _Glob:
    return _Glob(re.compile(_glob_to_regex(pattern)), basename_only="/" not in pattern)


def _glob_matches(pattern: _Glob, doc_id: str) -> bool:
    subject = doc_id.rstrip("/").rsplit("/", 1)[-1] if pattern.basename_only else doc_id
    return pattern.regex.fullmatch(subject) is not None


def _glob_to_regex(pattern: str) -> str:
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif pattern[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            parts.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := _class_end(pattern, i)) > 0:
            # A literal "[" in a class is escaped, so Python's regex never reads it as a nested set.
            members = pattern[i + 1 : end].replace("\\", "\\\\").replace("[", "\\[")
            parts.append(f"[^/{members[1:]}]" if members.startswith("!") else f"[{members}]")
            i = end + 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return "".join(parts)


def _class_end(pattern: str, start: int) -> int:
    """Index of the ``]`` closing the class opened at ``start`` (fnmatch rules), or -1."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "!":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    return pattern.find("]", i)


# ---------------------------------------------------------------------------------------------
# shared helpers

# Types mimetypes does not know on every system; the parser picks the format from them.
_EXTRA_CONTENT_TYPES = {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".jsonl": "application/x-ndjson",
    ".ndjson": "application/x-ndjson",
}


def guess_content_type(name: str) -> str | None:
    """Content type from the extension of a path, key or URL (query string ignored)."""
    suffix = PurePosixPath(urlsplit(name).path).suffix.lower()
    return _EXTRA_CONTENT_TYPES.get(suffix) or mimetypes.guess_type(f"x{suffix}")[0]


def datetime_to_ns(moment: datetime) -> int:
    """Exact nanoseconds since the epoch (naive datetimes are UTC), without float rounding."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


# ---------------------------------------------------------------------------------------------
# local files


class LocalSource:
    """A directory (recursive), a single file, or a glob such as ``docs/**/*.md``.

    doc_id is the path relative to the source root (the directory, the file's directory, or the
    glob's non-magic prefix) with POSIX separators; version is the file's st_mtime_ns. Hidden
    files and directories (name starting with '.') are skipped unless ``include_hidden``.
    """

    def __init__(self, uri: str, *, doc_filter: DocIdFilter | None = None, include_hidden: bool = False) -> None:
        path = unquote(uri.removeprefix("file://")) if uri.startswith("file://") else uri
        if not path:
            raise SourceError(f"empty source path in {uri!r}")
        self._pattern = os.path.expanduser(path)
        self._is_glob = glob.has_magic(self._pattern)
        self._root = Path(_non_magic_prefix(self._pattern) if self._is_glob else self._pattern)
        self._filter = doc_filter or DocIdFilter()
        self._include_hidden = include_hidden

    def warm_up(self) -> None:
        """Fail fast on a missing path."""
        self._require_root()

    def list(self) -> Iterator[DocumentRef]:
        self._require_root()
        refs = []
        for path, doc_id in self._candidates():
            if not self._filter.accepts(doc_id):
                continue
            try:
                stat = path.stat()
            except OSError:
                continue  # vanished while listing: it is simply not part of this listing
            refs.append(
                DocumentRef(doc_id=doc_id, uri=path.absolute().as_uri(), version=stat.st_mtime_ns, size=stat.st_size)
            )
        return iter(sorted(refs, key=lambda ref: ref.doc_id))

    def read(self, ref: DocumentRef) -> RawDocument:
        path = Path(unquote(urlsplit(ref.uri).path))
        try:
            with path.open("rb") as file:
                # Version of the bytes actually read, which may be newer than the listing's.
                version = os.fstat(file.fileno()).st_mtime_ns
                data = file.read()
        except FileNotFoundError:
            raise DocumentError(f"file not found: {path}") from None
        except IsADirectoryError:
            raise DocumentError(f"is a directory, not a file: {path}") from None
        except OSError as exc:
            raise DocumentError(f"cannot read {path}: {exc.strerror or exc}") from None
        return RawDocument(ref.doc_id, ref.uri, version, data, guess_content_type(ref.doc_id))

    def _require_root(self) -> None:
        if not self._root.exists():
            raise SourceError(f"source path does not exist: {self._root}")

    def _candidates(self) -> Iterator[tuple[Path, str]]:
        """(path, doc_id) of every file the path or glob names, hidden ones left out."""
        if self._is_glob:
            for match in glob.iglob(self._pattern, recursive=True, include_hidden=self._include_hidden):
                path = Path(match)
                if path.is_file():
                    yield path, path.relative_to(self._root).as_posix()
        elif self._root.is_file():
            yield self._root, self._root.name
        else:
            for directory, subdirs, files in os.walk(self._root):
                if not self._include_hidden:
                    subdirs[:] = [name for name in subdirs if not name.startswith(".")]
                for name in files:
                    if self._include_hidden or not name.startswith("."):
                        path = Path(directory, name)
                        yield path, path.relative_to(self._root).as_posix()


def _non_magic_prefix(pattern: str) -> str:
    """The directory part of a glob before its first wildcard: ``docs/**/*.md`` -> ``docs``."""
    prefix: list[str] = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        prefix.append(part)
    return str(Path(*prefix)) if prefix else "."


