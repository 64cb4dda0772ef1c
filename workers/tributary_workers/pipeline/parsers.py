"""The parser stage: RawDocument bytes -> Documents with text and metadata.

Format is chosen by the extension of the document's URI (or doc_id), then by its content type;
anything else is read as plain text:
- text (.txt and unknown text) and Markdown (.md/.markdown, kept as text);
- HTML (.html/.htm): text through inscriptis, <title> into metadata["title"];
- PDF (.pdf): text of all pages through pypdf, metadata["pages"] (and "title" when the PDF has one);
- JSON (.json: one object, or an array of objects) and JSONL (.jsonl/.ndjson: one object a line):
  one Document per record (see ParserOptions for the field names). A record without an id gets
  ``{file doc_id}#{line}`` (JSONL), ``#{n}`` (n-th array element, from 1), or the file's doc_id
  (a single object). Records sharing an id are all returned; the caller keeps the newest.

Failures, in two kinds, so that one bad input never stops a batch:
- A whole document that cannot be parsed (empty, binary, invalid UTF-8, too large, corrupt PDF,
  invalid .json file) makes ``run()`` raise ``DocumentError`` with a short reason.
- A JSON/JSONL file with some bad records is not a failed document: ``run()`` returns a
  ``ParseResult`` whose ``documents`` are the good records and whose ``failures`` are
  ``(doc_id, reason)`` for each bad one. The caller records both kinds the same way.

Every Document's metadata holds "source_uri" and "content_type" (the detected format) and stays
JSON-serialisable. The parser never embeds.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import lxml.etree
import lxml.html
from inscriptis import Inscriptis
from pypdf import PdfReader

from tributary_workers.documents import Document, DocumentError, RawDocument
from tributary_workers.errors import one_line

TEXT = "text/plain"
MARKDOWN = "text/markdown"
HTML = "text/html"
PDF = "application/pdf"
JSON = "application/json"
JSONL = "application/x-ndjson"

_FORMAT_BY_SUFFIX = {
    ".txt": TEXT,
    ".text": TEXT,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".html": HTML,
    ".htm": HTML,
    ".pdf": PDF,
    ".json": JSON,
    ".jsonl": JSONL,
    ".ndjson": JSONL,
}

_FORMAT_BY_CONTENT_TYPE = {
    "text/markdown": MARKDOWN,
    "text/x-markdown": MARKDOWN,
    "text/html": HTML,
    "application/xhtml+xml": HTML,
    "application/pdf": PDF,
    "application/json": JSON,
    "application/x-ndjson": JSONL,
    "application/ndjson": JSONL,
    "application/jsonl": JSONL,
    "application/x-jsonlines": JSONL,
}

# Control bytes that real text does not contain (tab, newlines, form feed, backspace and ESC do).
_NON_TEXT_BYTES = bytes(b for b in range(32) if b not in b"\t\n\r\f\b\x1b") + b"\x7f"
_BINARY_SAMPLE_BYTES = 8192
_BINARY_CONTROL_RATIO = 0.1

_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")


@dataclass(frozen=True)
class ParserOptions:
    max_document_bytes: int = 16 * 1024 * 1024
    json_id_field: str = "id"
    json_text_field: str = "text"
    json_version_field: str | None = "version"  # None, or absent from a record -> the file's version
    json_metadata_fields: tuple[str, ...] = ()  # copied into metadata; empty = all other scalar fields


@dataclass
class ParseResult:
    """What one RawDocument yields: its Documents, and the records of it that failed."""

    documents: list[Document] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (doc_id, reason) per bad record


class Parser:
    """Turns RawDocuments into Documents; see the module docstring for formats and failures."""

    def __init__(self, options: ParserOptions | None = None) -> None:
        self.options = options or ParserOptions()

    def warm_up(self) -> None:
        """Nothing to load: present so that every stage has the same shape."""

    def run(self, raw: RawDocument) -> ParseResult:
        """Parse one document; raises DocumentError when none of it can be used."""
        size = len(raw.data)
        if size > self.options.max_document_bytes:
            raise DocumentError(f"document is {size} bytes, over the {self.options.max_document_bytes}-byte limit")
        if not raw.data.strip():
            raise DocumentError("empty document")
        content_type = detect_format(raw)
        if content_type == PDF:
            return ParseResult([self._pdf_document(raw)])
        text = decode_text(raw.data)
        if content_type == HTML:
            return ParseResult([self._html_document(raw, text)])
        if content_type == JSON:
            return self._records(raw, _json_records(raw, text), JSON)
        if content_type == JSONL:
            return self._records(raw, _jsonl_records(raw, text), JSONL)
        return ParseResult([_document(raw, text, content_type)])

    def _html_document(self, raw: RawDocument, html: str) -> Document:
        try:
            tree = lxml.html.document_fromstring(_XML_DECLARATION.sub("", html, count=1))
        except lxml.etree.ParserError:  # markup without any element, e.g. only a comment
            raise DocumentError("empty document") from None
        except (lxml.etree.LxmlError, ValueError) as exc:
            raise DocumentError(f"unreadable HTML: {one_line(exc)}") from None
        title = (tree.findtext("head/title") or "").strip()
        return _document(raw, Inscriptis(tree).get_text(), HTML, {"title": title} if title else {})

    def _pdf_document(self, raw: RawDocument) -> Document:
        try:
            reader = PdfReader(io.BytesIO(raw.data))
            if reader.is_encrypted and not reader.decrypt(""):
                raise DocumentError("encrypted PDF: cannot read it without a password")
            pages = [page.extract_text() or "" for page in reader.pages]
            title = reader.metadata.title if reader.metadata else None
        except DocumentError:
            raise
        except Exception as exc:  # pypdf raises many types (PdfReadError, ValueError, KeyError...) on corrupt files
            raise DocumentError(f"unreadable PDF: {one_line(exc)}") from None
        text = "\n\n".join(page.strip() for page in pages if page.strip())
        if not text:
            raise DocumentError(f"PDF has no extractable text ({len(pages)} pages; scanned pages need OCR)")
        metadata: dict[str, Any] = {"pages": len(pages)}
        if isinstance(title, str) and title.strip():
            metadata["title"] = title.strip()
        return _document(raw, text, PDF, metadata)

    def _records(self, raw: RawDocument, records: list[_Record], content_type: str) -> ParseResult:
        """One Document per good record, one failure per bad one.

        Records sharing an id are all returned: a file may hold several versions of one
        document, and choosing among them (by version) is the caller's decision.
        """
        result = ParseResult()
        for record in records:
            doc_id = record.fallback_id
            try:
                if record.error:
                    raise DocumentError(record.error)
                if not isinstance(record.value, dict):
                    raise DocumentError(f"record is not a JSON object (got {_json_type(record.value)})")
                doc_id = self._record_id(record.value, record.fallback_id)
                result.documents.append(self._record_document(raw, record.value, doc_id, content_type))
            except DocumentError as exc:
                result.failures.append((doc_id, str(exc)))
        return result

    def _record_id(self, record: dict[str, Any], fallback_id: str) -> str:
        value = record.get(self.options.json_id_field)
        if value is None:
            return fallback_id
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
            raise DocumentError(f"field {self.options.json_id_field!r} must be a non-empty string or an integer")
        return str(value)

    def _record_document(self, raw: RawDocument, record: dict[str, Any], doc_id: str, content_type: str) -> Document:
        options = self.options
        text = record.get(options.json_text_field)
        if text is None:
            raise DocumentError(f"field {options.json_text_field!r} is missing")
        if not isinstance(text, str):
            raise DocumentError(f"field {options.json_text_field!r} is not a string (got {_json_type(text)})")
        if not text.strip():
            raise DocumentError("empty document")
        version = raw.version
        if options.json_version_field is not None and record.get(options.json_version_field) is not None:
            version = _record_version(record[options.json_version_field], options.json_version_field)
        reserved = {options.json_id_field, options.json_text_field, options.json_version_field}
        if options.json_metadata_fields:
            metadata = {name: record[name] for name in options.json_metadata_fields if name in record}
        else:
            metadata = {name: value for name, value in record.items() if name not in reserved and _is_scalar(value)}
        return Document(
            doc_id=doc_id,
            version=version,
            text=text,
            metadata={**metadata, "source_uri": raw.uri, "content_type": content_type},
            source_uri=raw.uri,
        )


def detect_format(raw: RawDocument) -> str:
    """The canonical content type to parse as: by extension, then by content type, else text."""
    suffix = PurePosixPath(urlsplit(raw.uri or raw.doc_id).path).suffix.lower()
    if suffix in _FORMAT_BY_SUFFIX:
        return _FORMAT_BY_SUFFIX[suffix]
    declared = (raw.content_type or "").partition(";")[0].strip().lower()
    return _FORMAT_BY_CONTENT_TYPE.get(declared, TEXT)


def decode_text(data: bytes) -> str:
    """UTF-8 text with newlines normalised, or DocumentError saying why the bytes are not text."""
    sample = data[:_BINARY_SAMPLE_BYTES]
    control_bytes = len(sample) - len(sample.translate(None, _NON_TEXT_BYTES))
    if b"\x00" in data or control_bytes > _BINARY_CONTROL_RATIO * len(sample):
        raise DocumentError("binary content, not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"invalid UTF-8 at byte {exc.start}") from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise DocumentError("empty document")
    return text


def _document(raw: RawDocument, text: str, content_type: str, extra: dict[str, Any] | None = None) -> Document:
    if not text.strip():
        raise DocumentError("empty document")
    metadata = {**(extra or {}), "source_uri": raw.uri, "content_type": content_type}
    return Document(doc_id=raw.doc_id, version=raw.version, text=text, metadata=metadata, source_uri=raw.uri)


@dataclass(frozen=True)
class _Record:
    fallback_id: str  # the doc_id when the record has no id of its own
    value: Any = None
    error: str | None = None  # why the record could not be read at all


def _json_records(raw: RawDocument, text: str) -> list[_Record]:
    """A .json file: one object (doc_id defaults to the file's) or an array of objects (#N, from 1)."""
    value = _load_json(text, line_offset=0)
    if isinstance(value, dict):
        return [_Record(raw.doc_id, value)]
    if not isinstance(value, list):
        raise DocumentError(f"JSON must be an object or an array of objects, got {_json_type(value)}")
    if not value:
        raise DocumentError("JSON array has no records")
    return [_Record(f"{raw.doc_id}#{n}", item) for n, item in enumerate(value, start=1)]


def _jsonl_records(raw: RawDocument, text: str) -> list[_Record]:
    """A .jsonl file: one object a line (doc_id defaults to #line); blank lines are skipped."""
    records = []
    # Split on "\n" only: JSON strings may hold raw U+2028, which str.splitlines() would split on.
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        fallback_id = f"{raw.doc_id}#{line_number}"
        try:
            records.append(_Record(fallback_id, _load_json(line, line_offset=line_number - 1)))
        except DocumentError as exc:
            records.append(_Record(fallback_id, error=str(exc)))
    return records


def _load_json(text: str, *, line_offset: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"invalid JSON at line {exc.lineno + line_offset}: {exc.msg}") from None
    except RecursionError:
        raise DocumentError(f"invalid JSON at line {line_offset + 1}: nested too deeply") from None


def _record_version(value: Any, field_name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise DocumentError(f"field {field_name!r} is not an integer: {value!r}")


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")
