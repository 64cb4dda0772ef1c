"""The event format: validation rules, wire format, and the JSON schema in docs/ (no drift)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from tributary_workers.streaming.events import (
    CONTENT_MAX_BYTES,
    DOC_ID_MAX_BYTES,
    STREAM_FIELD,
    Event,
    EventError,
    event_from_fields,
    json_schema,
    parse_event,
    parse_event_json,
    schema_text,
)

SCHEMA_FILE = Path(__file__).parents[2] / "docs" / "events.schema.json"

VALID = [
    {"op": "upsert", "doc_id": "guides/tides.md", "version": 3, "content": "# Tides\n\nThe moon pulls."},
    {"op": "upsert", "doc_id": "a", "version": 0, "uri": "s3://bucket/a.pdf", "content_type": "application/pdf",
     "metadata": {"team": "ops", "tags": ["x"]}, "produced_at": 1_700_000_000_000_000_000},
    {"op": "delete", "doc_id": "guides/tides.md", "version": 2**63 - 1},
    {"op": "delete", "doc_id": "b", "version": 7, "metadata": {"why": "retired"}, "produced_at": 0},
]

INVALID = [
    ({"op": "update", "doc_id": "a", "version": 1, "content": "x"}, "op"),
    ({"doc_id": "a", "version": 1, "content": "x"}, "op: Field required"),
    ({"op": "upsert", "version": 1, "content": "x"}, "doc_id: Field required"),
    ({"op": "upsert", "doc_id": "", "version": 1, "content": "x"}, "doc_id"),
    ({"op": "upsert", "doc_id": "a", "content": "x"}, "version: Field required"),
    ({"op": "upsert", "doc_id": "a", "version": -1, "content": "x"}, "version"),
    ({"op": "upsert", "doc_id": "a", "version": 2**63, "content": "x"}, "version"),
    ({"op": "upsert", "doc_id": "a", "version": "5", "content": "x"}, "version"),
    ({"op": "upsert", "doc_id": "a", "version": 1.5, "content": "x"}, "version"),
    ({"op": "upsert", "doc_id": "a", "version": True, "content": "x"}, "version"),
    ({"op": "upsert", "doc_id": "a", "version": 1}, "exactly one of content and uri"),
    ({"op": "upsert", "doc_id": "a", "version": 1, "content": "x", "uri": "/x"}, "exactly one of content and uri"),
    ({"op": "upsert", "doc_id": "a", "version": 1, "content": ""}, "content"),
    ({"op": "delete", "doc_id": "a", "version": 1, "content": "x"}, "a delete carries no content"),
    ({"op": "delete", "doc_id": "a", "version": 1, "uri": "/x"}, "a delete carries no content"),
    ({"op": "upsert", "doc_id": "a", "version": 1, "content": "x", "colour": "red"}, "colour: Extra inputs"),
    ({"op": "upsert", "doc_id": "a", "version": 1, "content": "x", "metadata": ["x"]}, "metadata"),
    ({"op": "upsert", "doc_id": "a", "version": 1, "content": "x", "produced_at": -5}, "produced_at"),
    ({"op": "upsert", "doc_id": "é" * (DOC_ID_MAX_BYTES // 2 + 1), "version": 1, "content": "x"}, "doc_id is longer"),
]


@pytest.mark.parametrize("data", VALID)
def test_valid_events_round_trip_through_the_stream_fields(data):
    event = parse_event(data)
    fields = event.to_fields()
    assert list(fields) == [STREAM_FIELD]
    again = event_from_fields({STREAM_FIELD: fields[STREAM_FIELD].encode()})
    assert again == event
    assert "null" not in fields[STREAM_FIELD]  # absent fields stay absent on the wire


@pytest.mark.parametrize(("data", "fragment"), INVALID)
def test_invalid_events_are_refused_with_a_one_line_reason(data, fragment):
    with pytest.raises(EventError) as caught:
        parse_event(data)
    reason = str(caught.value)
    assert fragment in reason
    assert "\n" not in reason and "https://" not in reason


def test_content_size_limit():
    with pytest.raises(EventError, match="content is longer"):
        parse_event({"op": "upsert", "doc_id": "a", "version": 1, "content": "x" * (CONTENT_MAX_BYTES + 1)})


@pytest.mark.parametrize(("payload", "fragment"), [
    (b"{not json", "invalid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b"\xff\xfe", "invalid JSON"),
    (b'"just a string"', "must be a JSON object"),
])
def test_unparseable_payloads(payload, fragment):
    with pytest.raises(EventError, match=fragment):
        parse_event_json(payload)


def test_an_entry_without_the_event_field():
    with pytest.raises(EventError, match="no 'event' field"):
        event_from_fields({"op": b"upsert"})


def test_stamping_fills_produced_at_only_when_absent():
    event = parse_event(VALID[0])
    assert event.stamped(42).produced_at == 42
    assert event.stamped(42).stamped(99).produced_at == 42


def test_schema_file_is_generated_from_the_model():
    """Fails on drift: regenerate with `python -m tributary_workers.streaming.events > docs/events.schema.json`."""
    assert SCHEMA_FILE.read_text() == schema_text()


def test_schema_and_model_agree_on_every_example():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for data in VALID:
        assert not list(validator.iter_errors(data)), data
    for data, _ in INVALID:
        # The byte-length limit of doc_id is beyond what JSON schema can say; the rest must agree.
        if data.get("doc_id", "").startswith("é"):
            continue
        assert list(validator.iter_errors(data)), data
    assert json.loads(SCHEMA_FILE.read_text())["$id"] == schema["$id"]


def test_event_model_is_frozen_in_shape():
    assert set(Event.model_fields) == {"op", "doc_id", "version", "content", "uri", "content_type", "metadata",
                                       "produced_at"}
