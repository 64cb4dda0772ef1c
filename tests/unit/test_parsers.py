"""Parser: every format, and a clear reason for every way a document can fail."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from pypdf import PdfWriter
from tributary_workers.documents import DocumentError, RawDocument
from tributary_workers.pipeline.parsers import Parser, ParseResult, ParserOptions


def raw(name: str, data: bytes, *, content_type: str | None = None, version: int = 1000) -> RawDocument:
    return RawDocument(doc_id=name, uri=f"file:///corpus/{name}", version=version, data=data, content_type=content_type)


def parse(document: RawDocument, options: ParserOptions | None = None) -> ParseResult:
    parser = Parser(options)
    parser.warm_up()
    return parser.run(document)


def parse_one(document: RawDocument, options: ParserOptions | None = None):
    result = parse(document, options)
    assert result.failures == []
    assert len(result.documents) == 1
    return result.documents[0]


def failure_reason(document: RawDocument, options: ParserOptions | None = None) -> str:
    with pytest.raises(DocumentError) as caught:
        parse(document, options)
    return str(caught.value)


def make_pdf(page_texts: list[str], title: str | None = None) -> bytes:
    """A minimal valid PDF with one Helvetica text line per page, xref offsets computed."""
    page_ids = [4 + 2 * i for i in range(len(page_texts))]
    kids = " ".join(f"{page_id} 0 R" for page_id in page_ids)
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: f"<< /Type /Pages /Kids [{kids}] /Count {len(page_ids)} >>".encode(),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    for page_id, text in zip(page_ids, page_texts, strict=True):
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects[page_id] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {page_id + 1} 0 R >>"
        ).encode()
        objects[page_id + 1] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content)
    info_ref = b""
    if title is not None:
        info_id = max(objects) + 1
        objects[info_id] = f"<< /Title ({title}) >>".encode()
        info_ref = b" /Info %d 0 R" % info_id
    out = bytearray(b"%PDF-1.4\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
    xref_at, size = len(out), max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    out += b"".join(b"%010d 00000 n \n" % offsets[number] for number in range(1, size))
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (size, info_ref, xref_at)
    return bytes(out)


# --- text formats -----------------------------------------------------------------------------


def test_plain_text_becomes_one_document_with_source_metadata():
    document = parse_one(raw("notes/a.txt", b"hello world\n", version=42))
    assert document.doc_id == "notes/a.txt"
    assert document.version == 42
    assert document.text == "hello world\n"
    assert document.source_uri == "file:///corpus/notes/a.txt"
    assert document.metadata == {"source_uri": "file:///corpus/notes/a.txt", "content_type": "text/plain"}


def test_markdown_is_kept_as_text():
    markdown = "# Title\n\nSome *emphasis* and a [link](http://x).\n"
    document = parse_one(raw("guide.md", markdown.encode()))
    assert document.text == markdown
    assert document.metadata["content_type"] == "text/markdown"


def test_unknown_extension_is_read_as_text():
    document = parse_one(raw("script.py", b"print('hi')\n"))
    assert document.text == "print('hi')\n"
    assert document.metadata["content_type"] == "text/plain"


def test_utf8_bom_is_dropped_and_newlines_normalised():
    document = parse_one(raw("a.txt", b"\xef\xbb\xbfone\r\ntwo\rthree"))
    assert document.text == "one\ntwo\nthree"


def test_html_gives_text_and_title():
    html = b"""<!DOCTYPE html><html><head><title> The Guide </title>
    <style>p { color: red }</style><script>var secret = 1;</script></head>
    <body><h1>Heading</h1><p>First &amp; second.</p></body></html>"""
    document = parse_one(raw("site/index.html", html))
    assert "Heading" in document.text
    assert "First & second." in document.text
    assert "secret" not in document.text and "color" not in document.text
    assert document.metadata["title"] == "The Guide"
    assert document.metadata["content_type"] == "text/html"


def test_html_without_title_has_no_title_metadata():
    document = parse_one(raw("page.htm", b"<p>just a paragraph</p>"))
    assert document.text.strip() == "just a paragraph"
    assert "title" not in document.metadata


def test_html_with_xml_declaration_is_parsed():
    document = parse_one(raw("x.html", b"<?xml version='1.0' encoding='utf-8'?><html><body><p>xhtml</p></body></html>"))
    assert document.text.strip() == "xhtml"


def test_content_type_chooses_format_when_extension_is_unknown():
    document = parse_one(
        raw(
            "https://example.com/page",
            b"<html><body><b>bold</b></body></html>",
            content_type="text/html; charset=utf-8",
        )
    )
    assert document.text.strip() == "bold"
    assert document.metadata["content_type"] == "text/html"


def test_extension_wins_over_content_type():
    document = parse_one(raw("raw.txt", b"<b>tags stay</b>", content_type="text/html"))
    assert document.text == "<b>tags stay</b>"


# --- PDF --------------------------------------------------------------------------------------


def test_pdf_text_of_all_pages_page_count_and_title():
    document = parse_one(raw("manual.pdf", make_pdf(["First page text", "Second page text"], title="Manual")))
    assert "First page text" in document.text
    assert "Second page text" in document.text
    assert document.text.index("First") < document.text.index("Second")
    assert document.metadata == {
        "pages": 2,
        "title": "Manual",
        "source_uri": "file:///corpus/manual.pdf",
        "content_type": "application/pdf",
    }


def test_pdf_without_extractable_text_fails():
    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    buffer = io.BytesIO()
    writer.write(buffer)
    assert (
        failure_reason(raw("scan.pdf", buffer.getvalue()))
        == "PDF has no extractable text (1 pages; scanned pages need OCR)"
    )


@pytest.mark.parametrize(
    "data",
    [b"%PDF-1.4\n1 0 obj << /Type /Catalog broken", b"this is not a PDF at all"],
    ids=["truncated", "not-a-pdf"],
)
def test_corrupt_pdf_fails(data):
    assert failure_reason(raw("broken.pdf", data)).startswith("unreadable PDF: ")


# --- JSON and JSONL records ---------------------------------------------------------------------


def test_json_object_is_one_record_with_its_own_id_and_version():
    record = {"id": "faq-1", "text": "How do I start?", "version": 7, "lang": "en"}
    document = parse_one(raw("faq.json", json.dumps(record).encode()))
    assert (document.doc_id, document.version, document.text) == ("faq-1", 7, "How do I start?")
    assert document.metadata == {
        "lang": "en",
        "source_uri": "file:///corpus/faq.json",
        "content_type": "application/json",
    }


def test_json_object_without_id_takes_the_file_doc_id():
    document = parse_one(raw("single.json", b'{"text": "alone"}', version=55))
    assert (document.doc_id, document.version) == ("single.json", 55)


def test_json_array_gives_one_document_per_record():
    records = [{"id": 1, "text": "one"}, {"text": "two"}, {"id": "three", "text": "three"}]
    result = parse(raw("many.json", json.dumps(records).encode()))
    assert [d.doc_id for d in result.documents] == ["1", "many.json#2", "three"]
    assert [d.text for d in result.documents] == ["one", "two", "three"]
    assert result.failures == []


def test_invalid_json_file_fails_with_line_number():
    assert (
        failure_reason(raw("bad.json", b'{\n  "id": 1,\n  "text": oops\n}'))
        == "invalid JSON at line 3: Expecting value"
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"42", "JSON must be an object or an array of objects, got number"),
        (b"[]", "JSON array has no records"),
        (b"[" * 100_000, "invalid JSON at line 1: nested too deeply"),
    ],
)
def test_json_file_without_usable_records_fails(data, reason):
    assert failure_reason(raw("odd.json", data)) == reason


def test_jsonl_keeps_good_records_and_reports_bad_ones():
    lines = [
        '{"id": "a", "text": "alpha"}',
        "",
        '{"id": "b", "text": }',
        '{"text": "no id here"}',
        "[1, 2]",
        '{"id": "c"}',
        '{"id": "d", "text": 5}',
        '{"id": "e", "text": "   "}',
        '{"id": "f", "text": "fine"}',
    ]
    result = parse(raw("feed.jsonl", "\n".join(lines).encode()))
    assert [(d.doc_id, d.text) for d in result.documents] == [
        ("a", "alpha"),
        ("feed.jsonl#4", "no id here"),
        ("f", "fine"),
    ]
    assert result.failures == [
        ("feed.jsonl#3", "invalid JSON at line 3: Expecting value"),
        ("feed.jsonl#5", "record is not a JSON object (got array)"),
        ("c", "field 'text' is missing"),
        ("d", "field 'text' is not a string (got number)"),
        ("e", "empty document"),
    ]


def test_records_sharing_an_id_are_all_returned_for_the_caller_to_choose():
    data = b'{"id": "a", "text": "old", "version": 1}\n{"id": "a", "text": "new", "version": 2}'
    result = parse(raw("log.jsonl", data))
    assert [(d.doc_id, d.version, d.text) for d in result.documents] == [("a", 1, "old"), ("a", 2, "new")]
    assert result.failures == []


def test_jsonl_line_separator_inside_a_string_does_not_split_the_record():
    result = parse(raw("feed.ndjson", '{"id": 1, "text": "a\u2028b"}\n'.encode()))
    assert [d.text for d in result.documents] == ["a\u2028b"]


def test_jsonl_all_records_bad_returns_only_failures():
    result = parse(raw("feed.jsonl", b"nope\n{}\n"))
    assert result.documents == []
    assert [reason for _, reason in result.failures] == [
        "invalid JSON at line 1: Expecting value",
        "field 'text' is missing",
    ]


def test_record_version_rules():
    lines = [
        '{"id": "int", "text": "t", "version": 5}',
        '{"id": "str", "text": "t", "version": "6"}',
        '{"id": "missing", "text": "t"}',
        '{"id": "null", "text": "t", "version": null}',
        '{"id": "bad", "text": "t", "version": "v2"}',
        '{"id": "bool", "text": "t", "version": true}',
    ]
    result = parse(raw("v.jsonl", "\n".join(lines).encode(), version=900))
    assert {d.doc_id: d.version for d in result.documents} == {"int": 5, "str": 6, "missing": 900, "null": 900}
    assert result.failures == [
        ("bad", "field 'version' is not an integer: 'v2'"),
        ("bool", "field 'version' is not an integer: True"),
    ]


def test_version_field_none_uses_the_file_version():
    result = parse(
        raw("v.jsonl", b'{"id": 1, "text": "t", "version": 5}', version=900), ParserOptions(json_version_field=None)
    )
    assert [d.version for d in result.documents] == [900]
    assert result.documents[0].metadata["version"] == 5  # no longer the version field: plain metadata


def test_custom_field_names():
    options = ParserOptions(json_id_field="key", json_text_field="body", json_version_field="rev")
    result = parse(raw("c.jsonl", b'{"key": "k1", "body": "content", "rev": 3, "id": "ignored"}'), options)
    document = result.documents[0]
    assert (document.doc_id, document.text, document.version) == ("k1", "content", 3)
    assert document.metadata["id"] == "ignored"


def test_invalid_record_id_is_a_record_failure():
    result = parse(raw("ids.jsonl", b'{"id": {"nested": 1}, "text": "t"}\n{"id": "", "text": "t"}'))
    assert result.documents == []
    assert [doc_id for doc_id, _ in result.failures] == ["ids.jsonl#1", "ids.jsonl#2"]
    assert all(reason == "field 'id' must be a non-empty string or an integer" for _, reason in result.failures)


def test_default_metadata_is_all_other_scalar_fields_and_serialisable():
    record = {
        "id": 1,
        "text": "t",
        "version": 2,
        "lang": "en",
        "score": 0.5,
        "draft": False,
        "owner": None,
        "tags": ["x"],
        "nested": {"a": 1},
        "source_uri": "spoofed",
    }
    document = parse_one(raw("m.json", json.dumps(record).encode()))
    assert document.metadata == {
        "lang": "en",
        "score": 0.5,
        "draft": False,
        "owner": None,
        "source_uri": "file:///corpus/m.json",
        "content_type": "application/json",
    }
    assert json.loads(json.dumps(document.metadata)) == document.metadata


def test_listed_metadata_fields_are_copied_even_when_nested():
    options = ParserOptions(json_metadata_fields=("tags", "lang", "absent"))
    record = {"id": 1, "text": "t", "lang": "en", "tags": ["x", "y"], "other": "dropped"}
    document = parse_one(raw("m.json", json.dumps(record).encode()), options)
    assert document.metadata == {
        "tags": ["x", "y"],
        "lang": "en",
        "source_uri": "file:///corpus/m.json",
        "content_type": "application/json",
    }


# --- whole-document failures -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.txt", "a.md", "a.html", "a.json", "a.jsonl", "a.pdf"])
@pytest.mark.parametrize("data", [b"", b"  \n\t\r\n  "], ids=["zero-bytes", "whitespace"])
def test_empty_document_fails(name, data):
    assert failure_reason(raw(name, data)) == "empty document"


def test_html_without_any_text_is_empty():
    assert (
        failure_reason(raw("blank.html", b"<html><head><title>t</title></head><body> </body></html>"))
        == "empty document"
    )


@pytest.mark.parametrize(
    "data",
    [b"text\x00with a NUL", bytes(range(1, 32)) * 20, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"],
    ids=["nul", "control-bytes", "png-header"],
)
def test_binary_content_fails(data):
    assert failure_reason(raw("blob.txt", data)) == "binary content, not text"


def test_invalid_utf8_reports_the_byte_offset():
    assert failure_reason(raw("latin1.txt", "caf\u00e9 ok".encode("latin-1"))) == "invalid UTF-8 at byte 3"


def test_invalid_utf8_fails_a_whole_jsonl_file():
    data = b'{"id": 1, "text": "ok"}\n{"id": 2, "text": "\xff"}'
    bad_byte = data.index(b"\xff")
    assert failure_reason(raw("feed.jsonl", data)) == f"invalid UTF-8 at byte {bad_byte}"


def test_document_over_the_size_limit_fails(tmp_path: Path):
    big = tmp_path / "big.txt"
    with big.open("wb") as file:
        chunk = b"x" * (1024 * 1024)
        for _ in range(50):
            file.write(chunk)
    reason = failure_reason(raw("big.txt", big.read_bytes()))
    assert reason == "document is 52428800 bytes, over the 16777216-byte limit"


def test_size_limit_is_configurable():
    assert (
        failure_reason(raw("a.txt", b"12345"), ParserOptions(max_document_bytes=4))
        == "document is 5 bytes, over the 4-byte limit"
    )
    assert parse_one(raw("a.txt", b"1234"), ParserOptions(max_document_bytes=4)).text == "1234"
