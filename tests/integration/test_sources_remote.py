"""HTTP and S3 sources against real servers on 127.0.0.1: http.server in a thread, moto_server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from harness.s3 import ACCESS_KEY, SECRET_KEY
from harness.servers import free_port, stop, wait_until_listening
from tributary_workers.documents import DocumentError, DocumentRef
from tributary_workers.pipeline.parsers import Parser
from tributary_workers.pipeline.remote_sources import HttpSource
from tributary_workers.pipeline.sources import (
    SourceError,
    datetime_to_ns,
    open_source,
)

MODIFIED_AT = datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC)
MODIFIED_NS = datetime_to_ns(MODIFIED_AT)
HTTP_FILES = {
    "guide.html": b"<html><head><title>Guide</title></head><body><p>Served over HTTP.</p></body></html>",
    "notes.md": b"# Notes\n\nplain markdown\n",
}

# --- HTTP ---------------------------------------------------------------------------------------


class CorpusHandler(SimpleHTTPRequestHandler):
    """Static files (with Last-Modified) plus a few misbehaving endpoints for the retry paths."""

    server: CorpusServer

    def do_GET(self) -> None:
        self.server.requests[self.path] += 1
        if self.path == "/flaky.txt" and self.server.requests[self.path] < 3:
            self.send_error(503, "Service Unavailable")
        elif self.path == "/broken.txt":
            self.send_error(500, "Internal Server Error")
        elif self.path == "/slow.txt":
            time.sleep(1.0)
            self._send_plain(b"too late")
        elif self.path == "/undated.txt":
            self._send_plain(b"no date on this one")
        elif self.path == "/flaky.txt":
            self._send_plain(b"third time lucky")
        else:
            super().do_GET()

    def _send_plain(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # keep test output clean
        pass


class CorpusServer(ThreadingHTTPServer):
    daemon_threads = True  # closing the server must not wait for a deliberately slow response
    requests: Counter[str]


@dataclass
class HttpCorpus:
    base: str
    server: CorpusServer

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


@pytest.fixture
def http_corpus(tmp_path: Path) -> Iterator[HttpCorpus]:
    for name, body in HTTP_FILES.items():
        (tmp_path / name).write_bytes(body)
        os.utime(tmp_path / name, (MODIFIED_AT.timestamp(), MODIFIED_AT.timestamp()))
    server = CorpusServer(("127.0.0.1", 0), partial(CorpusHandler, directory=str(tmp_path)))
    server.requests = Counter()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield HttpCorpus(f"http://127.0.0.1:{server.server_address[1]}", server)
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def http_source(urls: list[str], **kwargs) -> HttpSource:
    source = HttpSource(urls, attempts=3, timeout_s=5, **kwargs)
    source.warm_up()
    return source


def test_http_list_is_sorted_with_last_modified_versions_and_sizes(http_corpus):
    urls = [http_corpus.url("notes.md"), http_corpus.url("guide.html")]
    refs = list(http_source(urls).list())
    assert [ref.doc_id for ref in refs] == sorted(urls)
    assert all(ref.uri == ref.doc_id for ref in refs)
    assert [ref.version for ref in refs] == [MODIFIED_NS, MODIFIED_NS]
    assert [ref.size for ref in refs] == [len(HTTP_FILES["guide.html"]), len(HTTP_FILES["notes.md"])]


def test_http_read_returns_body_version_and_content_type(http_corpus):
    source = http_source([http_corpus.url("guide.html")])
    [ref] = source.list()
    document = source.read(ref)
    assert document.data == HTTP_FILES["guide.html"]
    assert document.version == MODIFIED_NS
    assert document.content_type == "text/html"
    [parsed] = Parser().run(document).documents
    assert parsed.metadata["title"] == "Guide"
    assert parsed.text.strip() == "Served over HTTP."


def test_http_404_is_a_document_failure_not_a_source_failure(http_corpus):
    urls = [http_corpus.url("guide.html"), http_corpus.url("missing.txt")]
    source = open_source(urls)
    refs = {ref.doc_id: ref for ref in source.list()}
    assert set(refs) == set(urls)
    assert source.read(refs[urls[0]]).data == HTTP_FILES["guide.html"]
    with pytest.raises(DocumentError, match="^HTTP 404 File not found$"):
        source.read(refs[urls[1]])
    assert http_corpus.server.requests["/missing.txt"] == 1  # a 404 is not retried


def test_http_transient_errors_are_retried(http_corpus):
    source = http_source([http_corpus.url("flaky.txt")])
    [ref] = source.list()
    assert source.read(ref).data == b"third time lucky"
    assert http_corpus.server.requests["/flaky.txt"] == 3


def test_http_persistent_server_error_fails_after_bounded_retries(http_corpus):
    source = HttpSource([http_corpus.url("broken.txt")], attempts=2)
    [ref] = source.list()
    with pytest.raises(DocumentError, match="^HTTP 500 Internal Server Error after 2 attempts$"):
        source.read(ref)
    assert http_corpus.server.requests["/broken.txt"] == 2


def test_http_timeout_is_retried_then_a_document_failure(http_corpus):
    source = HttpSource([http_corpus.url("slow.txt")], attempts=2, timeout_s=0.2)
    [ref] = source.list()
    with pytest.raises(DocumentError, match=r"^timed out after 0.2s \(2 attempts\)$"):
        source.read(ref)
    assert http_corpus.server.requests["/slow.txt"] == 2


def test_http_without_last_modified_is_versioned_by_fetch_time(http_corpus):
    source = http_source([http_corpus.url("undated.txt")])
    before = time.time_ns()
    [ref] = source.list()
    document = source.read(ref)
    after = time.time_ns()
    assert before <= ref.version <= document.version <= after
    assert document.data == b"no date on this one"


def test_http_unreachable_host_is_a_document_failure():
    url = f"http://127.0.0.1:{free_port()}/nothing-listens.txt"
    source = HttpSource([url], attempts=2)
    [ref] = source.list()
    with pytest.raises(DocumentError, match=r"^cannot fetch: .*\(2 attempts\)$"):
        source.read(ref)


def test_http_include_and_exclude_match_the_url(http_corpus):
    urls = [http_corpus.url(name) for name in ("guide.html", "notes.md", "undated.txt")]
    source = open_source(urls, include=["*.html", "*.md"], exclude=["notes.*"])
    assert [ref.doc_id for ref in source.list()] == [http_corpus.url("guide.html")]


# --- S3 (moto_server) ------------------------------------------------------------------------------

@pytest.fixture
def bucket(aws_env, s3_endpoint):
    """A fresh bucket holding a small corpus, plus the boto3 client that filled it."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    name = f"corpus-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    for key, body in {
        "docs/readme.md": b"# Readme\n",
        "docs/guides/setup.txt": b"setup steps",
        "docs/guides/page.html": b"<html><body>page</body></html>",
        "docs-old/stale.md": b"not under docs/",
        "top.txt": b"top level",
    }.items():
        client.put_object(Bucket=name, Key=key, Body=body)
    return name, client


def test_s3_lists_keys_relative_to_the_prefix_with_last_modified_versions(bucket):
    name, client = bucket
    source = open_source(f"s3://{name}/docs")
    source.warm_up()
    refs = list(source.list())
    assert [ref.doc_id for ref in refs] == ["guides/page.html", "guides/setup.txt", "readme.md"]
    for ref in refs:
        head = client.head_object(Bucket=name, Key=f"docs/{ref.doc_id}")
        assert ref.version == datetime_to_ns(head["LastModified"])
        assert ref.size == head["ContentLength"]
        assert ref.uri == f"s3://{name}/docs/{ref.doc_id}"


def test_s3_read_returns_bytes_and_guessed_content_type(bucket):
    name, _ = bucket
    source = open_source(f"s3://{name}/docs/")
    refs = {ref.doc_id: ref for ref in source.list()}
    document = source.read(refs["readme.md"])
    assert (document.data, document.content_type) == (b"# Readme\n", "text/markdown")
    assert document.version == refs["readme.md"].version


def test_s3_whole_bucket_and_include_exclude(bucket):
    name, _ = bucket
    assert [ref.doc_id for ref in open_source(f"s3://{name}").list()] == [
        "docs-old/stale.md",
        "docs/guides/page.html",
        "docs/guides/setup.txt",
        "docs/readme.md",
        "top.txt",
    ]
    source = open_source(f"s3://{name}", include=["docs/**"], exclude=["*.html"])
    assert [ref.doc_id for ref in source.list()] == ["docs/guides/setup.txt", "docs/readme.md"]


def test_s3_each_listing_sees_the_bucket_as_it_is_now(bucket):
    name, client = bucket
    source = open_source(f"s3://{name}/docs")
    assert len(list(source.list())) == 3
    client.put_object(Bucket=name, Key="docs/new.txt", Body=b"new")
    assert "new.txt" in [ref.doc_id for ref in source.list()]


def test_s3_storage_options_replace_the_environment(bucket, s3_endpoint, monkeypatch):
    name, _ = bucket
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(variable)
    options = {"endpoint_url": s3_endpoint, "key": ACCESS_KEY, "secret": SECRET_KEY}
    source = open_source(f"s3://{name}/docs", storage_options=options)
    refs = list(source.list())
    assert len(refs) == 3
    assert source.read(refs[-1]).data == b"# Readme\n"


def test_s3_object_deleted_after_listing_is_a_document_failure(bucket):
    name, client = bucket
    source = open_source(f"s3://{name}/docs")
    refs = {ref.doc_id: ref for ref in source.list()}
    client.delete_object(Bucket=name, Key="docs/readme.md")
    with pytest.raises(DocumentError, match=f"^object not found: s3://{name}/docs/readme.md$"):
        source.read(refs["readme.md"])


def test_s3_missing_bucket_is_a_source_error(aws_env):
    source = open_source("s3://no-such-bucket-here/docs")
    with pytest.raises(SourceError, match="^S3 bucket does not exist: s3://no-such-bucket-here$"):
        source.list()


def test_s3_unreachable_endpoint_is_a_one_line_source_error_without_credentials():
    options = {
        "endpoint_url": f"http://127.0.0.1:{free_port()}",
        "key": ACCESS_KEY,
        "secret": SECRET_KEY,
        "retries": 1,
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
    }
    source = open_source("s3://some-bucket/docs", storage_options=options)
    with pytest.raises(SourceError) as caught:
        source.list()
    message = str(caught.value)
    assert message.startswith("cannot list s3://some-bucket/docs: ")
    assert "\n" not in message
    assert SECRET_KEY not in message and ACCESS_KEY not in message


def test_ref_from_another_listing_can_be_read(bucket):
    """read() needs only the ref, so refs may be listed by one process and read by another."""
    name, _ = bucket
    source = open_source(f"s3://{name}/docs")
    ref = DocumentRef(doc_id="guides/setup.txt", uri=f"s3://{name}/docs/guides/setup.txt", version=1)
    assert source.read(ref).data == b"setup steps"
