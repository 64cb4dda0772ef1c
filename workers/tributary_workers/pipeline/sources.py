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

import asyncio
import glob
import mimetypes
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiohttp
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from tributary_workers.documents import DocumentError, DocumentRef, RawDocument
from tributary_workers.errors import one_line


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
            members = pattern[i + 1 : end].replace("\\", "\\\\")
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


# ---------------------------------------------------------------------------------------------
# HTTP(S)

# Statuses worth another try: the server or a proxy is briefly unable, not refusing.
_TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class _TransientHTTPStatus(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}".strip())


@dataclass(frozen=True)
class _Fetched:
    data: bytes
    last_modified: str | None
    content_type: str | None


class HttpSource:
    """A fixed list of http(s) URLs.

    doc_id and uri are the URL. ``list()`` sends one HEAD per URL so that version (Last-Modified
    in ns) and size are known before reading; a URL without Last-Modified (or whose HEAD fails)
    gets the listing time. ``read()`` GETs with bounded retries on transient errors, and its
    version is the GET's Last-Modified, else the time of the fetch. A 404, or an error that
    outlasts the retries, is that document's failure (DocumentError), never the run's.

    storage_options are fsspec HTTPFileSystem options (``headers``, ``client_kwargs``, ...).
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        doc_filter: DocIdFilter | None = None,
        storage_options: dict[str, Any] | None = None,
        attempts: int = 3,
        timeout_s: float = 30.0,
        max_concurrent_heads: int = 8,
    ) -> None:
        if not urls:
            raise SourceError("no URLs given for an HTTP source")
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
                raise SourceError(f"not an http(s) URL: {url!r} (a list of URLs must hold only http(s) URLs)")
        self._urls = sorted(set(urls))
        self._filter = doc_filter or DocIdFilter()
        self._storage_options = dict(storage_options or {})
        self._attempts = attempts
        self._timeout_s = timeout_s
        self._max_concurrent_heads = max_concurrent_heads
        self._fs: Any = None

    def warm_up(self) -> None:
        """Create the HTTP client (an aiohttp session on fsspec's I/O loop thread)."""
        if self._fs is not None:
            return
        from fsspec.implementations.http import HTTPFileSystem

        options = dict(self._storage_options)
        client_kwargs = dict(options.pop("client_kwargs", {}))
        client_kwargs.setdefault("timeout", aiohttp.ClientTimeout(total=self._timeout_s))
        self._fs = HTTPFileSystem(skip_instance_cache=True, client_kwargs=client_kwargs, **options)

    def list(self) -> Iterator[DocumentRef]:
        self.warm_up()
        urls = [url for url in self._urls if self._filter.accepts(url)]
        listed_at = time.time_ns()
        heads = self._run(self._head_all, urls)
        refs = []
        for url, (last_modified, size) in zip(urls, heads, strict=True):
            version = _http_date_ns(last_modified) or listed_at
            refs.append(DocumentRef(doc_id=url, uri=url, version=version, size=size))
        return iter(refs)

    def read(self, ref: DocumentRef) -> RawDocument:
        self.warm_up()
        retrying = Retrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            retry=retry_if_exception_type((_TransientHTTPStatus, aiohttp.ClientConnectionError, TimeoutError)),
            reraise=True,
        )
        try:
            fetched = retrying(self._run, self._fetch, ref.uri)
        except _TransientHTTPStatus as exc:
            raise DocumentError(f"{exc} after {self._attempts} attempts") from None
        except TimeoutError:
            raise DocumentError(f"timed out after {self._timeout_s:g}s ({self._attempts} attempts)") from None
        except aiohttp.ClientError as exc:
            raise DocumentError(f"cannot fetch: {exc} ({self._attempts} attempts)") from None
        version = _http_date_ns(fetched.last_modified) or time.time_ns()
        content_type = fetched.content_type or guess_content_type(ref.uri)
        return RawDocument(ref.doc_id, ref.uri, version, fetched.data, content_type)

    def _run(self, async_function: Any, *args: Any) -> Any:
        """Run a coroutine function on the I/O loop thread that owns the HTTP session."""
        from fsspec.asyn import sync

        return sync(self._fs.loop, async_function, *args)

    async def _fetch(self, url: str) -> _Fetched:
        session = await self._fs.set_session()
        async with session.get(url, **self._fs.kwargs) as response:
            if response.status in _TRANSIENT_STATUSES:
                raise _TransientHTTPStatus(response.status, response.reason or "")
            if response.status >= 400:
                raise DocumentError(f"HTTP {response.status} {response.reason or ''}".strip())
            data = await response.read()
            content_type = response.headers.get("Content-Type", "").partition(";")[0].strip() or None
            return _Fetched(data, response.headers.get("Last-Modified"), content_type)

    async def _head_all(self, urls: Sequence[str]) -> list[tuple[str | None, int | None]]:
        session = await self._fs.set_session()
        gate = asyncio.Semaphore(self._max_concurrent_heads)

        async def head(url: str) -> tuple[str | None, int | None]:
            """(Last-Modified, size), or (None, None) when the server cannot tell: read() decides."""
            async with gate:
                try:
                    async with session.head(url, allow_redirects=True, **self._fs.kwargs) as response:
                        if response.status >= 400:
                            return None, None
                        length = response.headers.get("Content-Length", "")
                        return response.headers.get("Last-Modified"), int(length) if length.isdigit() else None
                except (TimeoutError, aiohttp.ClientError):
                    return None, None

        return await asyncio.gather(*(head(url) for url in urls))


def _http_date_ns(value: str | None) -> int | None:
    """An HTTP date header in ns since the epoch; None when absent or unparseable."""
    if not value:
        return None
    try:
        return datetime_to_ns(parsedate_to_datetime(value))
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# S3-compatible object stores


class S3Source:
    """Objects under ``s3://bucket/prefix`` on AWS S3 or any S3-compatible store, through s3fs.

    doc_id is the object key relative to the prefix (the prefix is a folder: ``s3://b/docs``
    lists ``docs/...``); version is LastModified in ns. Endpoint and credentials come from
    storage_options (s3fs options: ``endpoint_url``, ``key``, ``secret``, ...), else from the
    standard AWS environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL). Credentials never appear in messages.
    """

    def __init__(
        self, uri: str, *, doc_filter: DocIdFilter | None = None, storage_options: dict[str, Any] | None = None
    ) -> None:
        parts = urlsplit(uri)
        if parts.scheme.lower() != "s3" or not parts.netloc:
            raise SourceError(f"not an s3://bucket/prefix URI: {uri!r}")
        self._bucket = parts.netloc
        self._prefix = parts.path.strip("/")
        self._root = f"{self._bucket}/{self._prefix}" if self._prefix else self._bucket
        self._filter = doc_filter or DocIdFilter()
        self._storage_options = dict(storage_options or {})
        self._fs: Any = None

    def warm_up(self) -> None:
        """Create the s3fs client; the endpoint comes from the env when storage_options lack one."""
        if self._fs is not None:
            return
        import s3fs

        options = dict(self._storage_options)
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and "endpoint_url" not in options and "endpoint_url" not in options.get("client_kwargs", {}):
            options["endpoint_url"] = endpoint
        self._fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)

    def list(self) -> Iterator[DocumentRef]:
        self.warm_up()
        try:
            self._fs.call_s3("head_bucket", Bucket=self._bucket)
            objects = self._fs.find(self._root, detail=True)
        except FileNotFoundError:
            raise SourceError(f"S3 bucket does not exist: s3://{self._bucket}") from None
        except PermissionError:
            raise SourceError(f"access denied listing s3://{self._root}") from None
        except Exception as exc:  # botocore/aiohttp raise many types for an unreachable endpoint
            raise SourceError(f"cannot list s3://{self._root}: {one_line(exc)}") from None
        refs = []
        for path, info in objects.items():
            doc_id = self._doc_id(path)
            if self._filter.accepts(doc_id):
                version = datetime_to_ns(info["LastModified"])
                refs.append(DocumentRef(doc_id=doc_id, uri=f"s3://{path}", version=version, size=info.get("size")))
        return iter(sorted(refs, key=lambda ref: ref.doc_id))

    def read(self, ref: DocumentRef) -> RawDocument:
        self.warm_up()
        path = ref.uri.removeprefix("s3://")
        try:
            data = self._fs.cat_file(path)
        except FileNotFoundError:
            raise DocumentError(f"object not found: {ref.uri}") from None
        except PermissionError:
            raise DocumentError(f"access denied reading {ref.uri}") from None
        except Exception as exc:  # transient errors were already retried inside s3fs
            raise DocumentError(f"cannot read {ref.uri}: {one_line(exc)}") from None
        # The listing's LastModified: if the object changed since, the next run sees a newer one.
        return RawDocument(ref.doc_id, ref.uri, ref.version, data, guess_content_type(path))

    def _doc_id(self, path: str) -> str:
        if path == self._root:  # the prefix names a single object
            return path.rsplit("/", 1)[-1]
        return path.removeprefix(self._root + "/")
