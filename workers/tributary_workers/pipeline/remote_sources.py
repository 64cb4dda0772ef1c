"""Remote sources: http(s) URLs (aiohttp, retries with tenacity) and S3-compatible buckets (fsspec/s3fs)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from tributary_workers.documents import DocumentError, DocumentRef, RawDocument
from tributary_workers.errors import one_line
from tributary_workers.pipeline.sources import (
    DocIdFilter,
    SourceError,
    datetime_to_ns,
    guess_content_type,
)

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
