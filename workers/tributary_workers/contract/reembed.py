"""The steps of an EmbeddingIndex's blue-green re-embedding, shared by both planes.

The operator never talks to Milvus and never embeds: each step runs as a Job whose command is
``tributary-index-admin <step>``. The Job's pod writes one ``StepReport`` as JSON to its
termination message (``--report-file /dev/termination-log``, at most 4 KiB), and the operator's
pure lifecycle reads it back. Counts and gates are what status and conditions show.

    backfill  shard i of N copies every live document of the active collection into the
              candidate (re-embedded with the candidate's model; re-chunked from the stored parsed
              text when the chunking changed), fenced by the candidate's ledger
    catchup   compares the two ledgers and the candidate's repair set and re-embeds the
              difference until it is empty (``remaining`` 0)
    validate  finishes the candidate's bulk load (index, replicas), then the gates below
    swap      points the alias at the candidate, only if it still points at the expected collection
    retire    drops a collection no alias points at, with its ledger namespace and repair set

The same report carries the periodic ``drift`` check of the active collection (rows without a
live ledger record, rows of another model), which the operator shows as ``status.drift``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum

MAX_REPORT_BYTES = 4096  # the kubelet truncates termination messages beyond this


class Step(StrEnum):
    BACKFILL = "backfill"
    CATCHUP = "catchup"
    VALIDATE = "validate"
    SWAP = "swap"
    RETIRE = "retire"
    DRIFT = "drift"  # not a re-embedding step: the periodic check of the active collection (status.drift)


class GateName(StrEnum):
    DOCUMENT_RATIO = "DocumentRatio"  # candidate's live documents / active's >= minDocumentRatio
    DIMENSION = "Dimension"  # the candidate's vector dimension is the spec's (when it names one)
    METRIC = "Metric"  # the candidate's index uses the spec's metric
    SELF_RETRIEVAL = "SelfRetrieval"  # sampled chunks, queried by their own text, find their document
    QUERY_OVERLAP = "QueryOverlap"  # sampleQueries' top-k documents, candidate vs active


@dataclass(frozen=True)
class Gate:
    name: GateName
    passed: bool
    reason: str  # CamelCase, e.g. RatioMet, RatioTooLow
    message: str  # one line, with the measured value and the threshold
    value: float | None = None
    threshold: float | None = None  # None: reported, not gated


@dataclass(frozen=True)
class StepReport:
    step: Step
    ok: bool  # the step reached its goal (backfill done, nothing remaining, every gate passed, ...)
    reason: str  # CamelCase
    message: str  # one line
    counts: dict[str, int] = field(default_factory=dict)  # e.g. documents, written, remaining
    gates: tuple[Gate, ...] = ()
    model: str | None = None  # swap: the model id the collection now served records (status.activeModel)

    def to_json(self) -> str:
        data = {**asdict(self), "step": self.step.value,
                "gates": [{**asdict(g), "name": g.name.value} for g in self.gates]}
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        if len(text.encode()) > MAX_REPORT_BYTES:  # shorten messages, never drop the verdicts
            data["message"] = data["message"][:200]
            for gate in data["gates"]:
                gate["message"] = gate["message"][:120]
            text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return text

    @classmethod
    def from_json(cls, text: str) -> StepReport:
        data = json.loads(text)
        gates = tuple(Gate(GateName(g["name"]), bool(g["passed"]), g["reason"], g["message"],
                           g.get("value"), g.get("threshold")) for g in data.get("gates") or ())
        return cls(Step(data["step"]), bool(data["ok"]), data["reason"], data["message"],
                   {k: int(v) for k, v in (data.get("counts") or {}).items()}, gates, data.get("model"))
