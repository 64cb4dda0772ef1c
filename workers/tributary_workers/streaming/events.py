"""The document event: the one message format of the streaming path.

An event asks for one versioned change of one document:

- ``op``            ``upsert`` or ``delete``;
- ``doc_id``        the document's stable id (the same id the batch path gives the same document,
                    e.g. its path relative to the source root, so batch and stream fence together);
- ``version``       an integer, monotonic per document, set by the producer (nanoseconds since the
                    epoch work well: the batch path uses file modification times);
- ``content``       the document text (upsert), or
- ``uri``           where the worker fetches it (upsert), through the same sources as batch:
                    a local path or file://, http(s)://, s3://;
- ``content_type``  how to parse it (text/plain, text/markdown, text/html, application/pdf, ...);
                    by default from the doc_id's or uri's extension, else plain text;
- ``metadata``      a JSON object stored with every chunk;
- ``produced_at``   nanoseconds since the epoch when the producer created it; the gateway and the
                    Python producer fill it when absent. End-to-end latency is measured from it.

On the Redis stream an event is one entry with a single field ``event`` whose value is the event as
JSON. The JSON schema in docs/events.schema.json is generated from this model:

    python -m tributary_workers.streaming.events > docs/events.schema.json

(a unit test fails when the file and the model drift apart).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from tributary_workers.errors import explain

# Same limits as the rest of the data plane: the Milvus doc_id field and the parser's input limit.
DOC_ID_MAX_BYTES = 2048
CONTENT_MAX_BYTES = 16 * 1024 * 1024
VERSION_MAX = 2**63 - 1  # the Milvus `version` field is an INT64
STREAM_FIELD = "event"  # the stream entry field holding the event's JSON
SCHEMA_ID = "https://tributary.dev/schemas/events.schema.json"


class EventError(ValueError):
    """An event that fails validation; the message is one line, fit for a dead-letter reason."""


StrictInt = Annotated[int, Field(strict=True)]
Nanoseconds = Annotated[int, Field(strict=True, ge=0)]
NonEmpty = Annotated[str, Field(min_length=1)]


def _no_default(schema: dict[str, Any]) -> None:
    # An optional field is absent, never null, in the documented format: no "default": null.
    schema.pop("default", None)


class Event(BaseModel):
    """One versioned change of one document, as producers send it and workers consume it."""

    model_config = ConfigDict(
        extra="forbid",
        title="Tributary document event",
        json_schema_extra={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": SCHEMA_ID,
            # The cross-field rules enforced by the model validator below.
            "allOf": [
                {
                    "if": {"properties": {"op": {"const": "upsert"}}},
                    "then": {"oneOf": [{"required": ["content"]}, {"required": ["uri"]}]},
                },
                {
                    "if": {"properties": {"op": {"const": "delete"}}},
                    "then": {"not": {"anyOf": [{"required": ["content"]}, {"required": ["uri"]},
                                               {"required": ["content_type"]}]}},
                },
            ],
        },
    )

    op: Literal["upsert", "delete"] = Field(description="upsert: create or replace the document; "
                                                        "delete: remove it (a versioned tombstone).")
    doc_id: str = Field(min_length=1, description=f"Stable document id, at most {DOC_ID_MAX_BYTES} "
                                                  "bytes of UTF-8.")
    version: StrictInt = Field(ge=0, le=VERSION_MAX,
                               description="Monotonic per document, set by the producer. A change at "
                                           "or below the version the index holds is superseded.")
    content: NonEmpty | SkipJsonSchema[None] = Field(
        None, json_schema_extra=_no_default,
        description="The document text (upsert only; exactly one of content and uri).")
    uri: NonEmpty | SkipJsonSchema[None] = Field(
        None, json_schema_extra=_no_default,
        description="Where the worker reads the document: a path, file://, http(s):// or s3:// URI "
                    "(upsert only; exactly one of content and uri).")
    content_type: NonEmpty | SkipJsonSchema[None] = Field(
        None, json_schema_extra=_no_default,
        description="Media type to parse the document as, e.g. text/markdown; by default from the doc_id's "
                    "or uri's extension, else text/plain.")
    metadata: dict[str, Any] = Field(default_factory=dict,
                                     description="JSON object stored with every chunk of the document.")
    produced_at: Nanoseconds | SkipJsonSchema[None] = Field(
        None, json_schema_extra=_no_default,
        description="Nanoseconds since the epoch when the event was produced; filled by the gateway or the "
                    "producer client when absent.")

    @field_validator("doc_id")
    @classmethod
    def _doc_id_fits(cls, value: str) -> str:
        if len(value.encode()) > DOC_ID_MAX_BYTES:
            raise ValueError(f"doc_id is longer than {DOC_ID_MAX_BYTES} bytes")
        return value

    @field_validator("content")
    @classmethod
    def _content_fits(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) > CONTENT_MAX_BYTES:
            raise ValueError(f"content is longer than {CONTENT_MAX_BYTES} bytes")
        return value

    @model_validator(mode="after")
    def _op_rules(self) -> Event:
        if self.op == "upsert":
            if (self.content is None) == (self.uri is None):
                raise ValueError("an upsert needs exactly one of content and uri")
        elif self.content is not None or self.uri is not None or self.content_type is not None:
            raise ValueError("a delete carries no content, uri or content_type")
        return self

    # -- wire format ---------------------------------------------------------------------------

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)

    def to_fields(self) -> dict[str, str]:
        """The stream entry for this event."""
        return {STREAM_FIELD: self.to_json()}

    def stamped(self, now_ns: int) -> Event:
        """This event with produced_at filled in when it is absent."""
        return self if self.produced_at is not None else self.model_copy(update={"produced_at": now_ns})


def parse_event(data: Any) -> Event:
    """An Event from a decoded JSON value; raises EventError with a one-line reason."""
    if not isinstance(data, dict):
        raise EventError(f"an event must be a JSON object, got {type(data).__name__}")
    try:
        return Event.model_validate(data)
    except ValidationError as exc:
        raise EventError(explain(exc)) from None


def parse_event_json(text: str | bytes) -> Event:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise EventError(f"invalid JSON: {type(exc).__name__}") from None
    return parse_event(data)


def event_from_fields(fields: dict[str, str]) -> Event:
    """The Event of a stream entry; raises EventError when the entry is not a valid event."""
    payload = fields.get(STREAM_FIELD)
    if payload is None:
        raise EventError(f"stream entry has no {STREAM_FIELD!r} field (fields: {', '.join(sorted(fields)) or 'none'})")
    return parse_event_json(payload)


def json_schema() -> dict[str, Any]:
    return Event.model_json_schema()


def schema_text() -> str:
    """The exact text of docs/events.schema.json."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(schema_text())
