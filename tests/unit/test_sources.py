"""Local sources, include/exclude globs and URI dispatch (remote sources: tests/integration)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tributary_workers.documents import DocumentError
from tributary_workers.pipeline.remote_sources import HttpSource, S3Source
from tributary_workers.pipeline.sources import (
    DocIdFilter,
    LocalSource,
    SourceError,
    guess_content_type,
    open_source,
)


def write(root: Path, relative: str, content: str = "x") -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    for relative in [
        "b.md",
        "a.txt",
        "guides/z.md",
        "guides/deep/c.pdf",
        "guides/deep/d.md",
        ".hidden.md",
        ".git/config",
        "notes/.draft.md",
    ]:
        write(root, relative, f"content of {relative}")
    return root


def doc_ids(source) -> list[str]:
    source.warm_up()
    return [ref.doc_id for ref in source.list()]


# --- local listing -----------------------------------------------------------------------------


def test_directory_lists_recursively_sorted_with_posix_relative_ids_and_hidden_skipped(corpus):
    assert doc_ids(open_source(str(corpus))) == [
        "a.txt",
        "b.md",
        "guides/deep/c.pdf",
        "guides/deep/d.md",
        "guides/z.md",
    ]


def test_hidden_files_are_listed_when_asked(corpus):
    ids = doc_ids(LocalSource(str(corpus), include_hidden=True))
    assert {".hidden.md", ".git/config", "notes/.draft.md"} <= set(ids)


def test_version_is_mtime_ns_and_size_from_stat(corpus):
    path = corpus / "guides/z.md"
    os.utime(path, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    refs = {ref.doc_id: ref for ref in open_source(str(corpus)).list()}
    ref = refs["guides/z.md"]
    assert ref.version == 1_700_000_000_123_456_789 == path.stat().st_mtime_ns
    assert ref.size == len("content of guides/z.md")
    assert ref.uri == path.absolute().as_uri()


def test_glob_root_is_its_non_magic_prefix(corpus):
    assert doc_ids(open_source(f"{corpus}/guides/**/*.md")) == ["deep/d.md", "z.md"]
    assert doc_ids(open_source(f"{corpus}/*.md")) == ["b.md"]


def test_relative_glob_is_relative_to_the_current_directory(corpus, monkeypatch):
    monkeypatch.chdir(corpus)
    assert doc_ids(open_source("**/*.pdf")) == ["guides/deep/c.pdf"]


def test_file_uri_is_the_same_as_the_path(corpus):
    assert doc_ids(open_source(corpus.as_uri())) == doc_ids(open_source(str(corpus)))


def test_file_uri_with_percent_encoding(tmp_path):
    write(tmp_path / "my docs", "a b.txt")
    source = open_source((tmp_path / "my docs").as_uri())
    [ref] = source.list()
    assert ref.doc_id == "a b.txt"
    assert source.read(ref).data == b"x"


def test_a_single_file_is_its_own_source(corpus):
    source = open_source(str(corpus / "guides/z.md"))
    [ref] = source.list()
    assert ref.doc_id == "z.md"
    assert source.read(ref).data == b"content of guides/z.md"


@pytest.mark.parametrize("suffix", ["missing", "missing/**/*.md"])
def test_missing_path_is_a_source_error_with_the_path(tmp_path, suffix):
    source = open_source(f"{tmp_path}/{suffix}")
    with pytest.raises(SourceError, match=f"^source path does not exist: {tmp_path}/missing$"):
        source.warm_up()
    with pytest.raises(SourceError):
        source.list()


def test_glob_matching_nothing_lists_nothing(corpus):
    assert doc_ids(open_source(f"{corpus}/**/*.docx")) == []


# --- local reading -----------------------------------------------------------------------------


def test_read_returns_bytes_version_and_guessed_content_type(corpus):
    source = open_source(str(corpus))
    refs = {ref.doc_id: ref for ref in source.list()}
    document = source.read(refs["guides/deep/c.pdf"])
    assert document.data == b"content of guides/deep/c.pdf"
    assert (document.doc_id, document.uri) == ("guides/deep/c.pdf", refs["guides/deep/c.pdf"].uri)
    assert document.version == refs["guides/deep/c.pdf"].version
    assert document.content_type == "application/pdf"
    assert source.read(refs["b.md"]).content_type == "text/markdown"


def test_read_reports_the_version_of_the_bytes_it_read(corpus):
    source = open_source(str(corpus))
    [ref] = [ref for ref in source.list() if ref.doc_id == "a.txt"]
    path = corpus / "a.txt"
    path.write_text("changed")
    os.utime(path, ns=(ref.version + 5_000_000_000, ref.version + 5_000_000_000))
    document = source.read(ref)
    assert document.data == b"changed"
    assert document.version == ref.version + 5_000_000_000


def test_reading_a_vanished_file_is_a_document_error(corpus):
    source = open_source(str(corpus))
    [ref] = [ref for ref in source.list() if ref.doc_id == "a.txt"]
    (corpus / "a.txt").unlink()
    with pytest.raises(DocumentError, match="^file not found: "):
        source.read(ref)


# --- include / exclude ---------------------------------------------------------------------------


def test_include_and_exclude_on_a_local_source(corpus):
    source = open_source(str(corpus), include=["*.md", "**/*.pdf"], exclude=["guides/deep/**"])
    assert doc_ids(source) == ["b.md", "guides/z.md"]


def test_exclude_wins_over_include(corpus):
    assert doc_ids(open_source(str(corpus), include=["*.md"], exclude=["*.md"])) == []


@pytest.mark.parametrize(
    ("pattern", "doc_id", "expected"),
    [
        ("*.md", "a.md", True),
        ("*.md", "x/y/a.md", True),  # no '/' in the pattern: matched against the last segment
        ("*.md", "a.mdx", False),
        ("docs/*.md", "docs/a.md", True),
        ("docs/*.md", "docs/sub/a.md", False),  # '*' stays within a segment
        ("docs/**/*.md", "docs/a.md", True),  # '**/' also matches no directory
        ("docs/**/*.md", "docs/x/y/a.md", True),
        ("docs/**", "docs/x/y/a.md", True),
        ("docs/**", "other/a.md", False),
        ("**/drafts/*", "a/drafts/x.md", True),
        ("?.txt", "a.txt", True),
        ("?.txt", "ab.txt", False),
        ("[ab].txt", "b.txt", True),
        ("[!ab].txt", "c.txt", True),
        ("[!ab].txt", "a.txt", False),
        ("file[1].txt", "file1.txt", True),
        ("a+b (1).txt", "a+b (1).txt", True),  # regex characters are literal
        ("https://example.com/*.html", "https://example.com/a.html", True),
    ],
)
def test_glob_semantics(pattern, doc_id, expected):
    assert DocIdFilter(include=[pattern]).accepts(doc_id) is expected


def test_empty_filter_accepts_everything():
    assert DocIdFilter().accepts("anything/at/all.bin")


# --- dispatch and helpers -----------------------------------------------------------------------


def test_open_source_picks_the_source_by_uri(tmp_path):
    assert isinstance(open_source(str(tmp_path)), LocalSource)
    assert isinstance(open_source(tmp_path.as_uri()), LocalSource)
    assert isinstance(open_source("https://example.com/a.html"), HttpSource)
    assert isinstance(open_source(["http://example.com/a", "https://example.com/b"]), HttpSource)
    assert isinstance(open_source("s3://bucket/prefix"), S3Source)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("ftp://host/file", "unsupported source URI scheme 'ftp'"),
        ("s3://", "not an s3://bucket/prefix URI"),
        (["https://example.com/a", "/local/path"], "not an http(s) URL: '/local/path'"),
        ([], "no URLs given for an HTTP source"),
        ("", "empty source path"),
    ],
)
def test_bad_uri_is_a_source_error(uri, message):
    with pytest.raises(SourceError) as caught:
        open_source(uri)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("a.md", "text/markdown"),
        ("x/a.JSONL", "application/x-ndjson"),
        ("a.pdf", "application/pdf"),
        ("https://example.com/page.html?lang=en", "text/html"),
        ("no-extension", None),
    ],
)
def test_guess_content_type(name, content_type):
    assert guess_content_type(name) == content_type
