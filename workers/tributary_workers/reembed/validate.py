"""The validate step: finish the candidate's bulk load, then measure the gates a swap waits for.

    DocumentRatio  distinct live documents of the candidate / of the active collection (rows are
                   the truth, not ledgers), at least min_document_ratio; an empty active: 1
    Dimension      the candidate's vector dimension is the expected one (--dimension, else the model's)
    Metric         the candidate's vector index uses the expected metric
    SelfRetrieval  sampled chunks (the smallest primary keys: hashes, so a stable uniform sample),
                   embedded again with the candidate's model, find their own document in its top-k
    QueryOverlap   only with sample queries: the share of the active's top-k documents the candidate
                   also returns, mean over the queries; gated only when a threshold is given

The verdict math is pure (the functions above ``validate``); ``validate`` does the Milvus and model
work and returns a StepReport. A failed gate is a verdict, not an error: the step still succeeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tributary_workers.contract import defaults
from tributary_workers.contract.reembed import Gate, GateName, Step, StepReport
from tributary_workers.errors import PermanentError
from tributary_workers.reembed import collection as coll

# -- pure verdict math -------------------------------------------------------------------------


def document_ratio(candidate_documents: int, active_documents: int) -> float:
    """Candidate's live documents per active one; 1 when the active holds none (nothing to miss)."""
    if active_documents <= 0:
        return 1.0
    return candidate_documents / active_documents


def ratio_gate(candidate_documents: int, active_documents: int, minimum: float) -> Gate:
    ratio = document_ratio(candidate_documents, active_documents)
    passed = ratio >= minimum
    return Gate(GateName.DOCUMENT_RATIO, passed, "RatioMet" if passed else "RatioTooLow",
                f"candidate holds {candidate_documents} of the active's {active_documents} documents "
                f"(ratio {ratio:.4f}, minimum {minimum})", round(ratio, 6), minimum)


def dimension_gate(actual: int | None, expected: int) -> Gate:
    passed = actual == expected
    return Gate(GateName.DIMENSION, passed, "DimensionMatches" if passed else "DimensionMismatch",
                f"candidate vectors have dimension {actual}, expected {expected}",
                None if actual is None else float(actual), float(expected))


def metric_gate(actual: str | None, expected: str) -> Gate:
    passed = actual is not None and actual.upper() == expected.upper()
    return Gate(GateName.METRIC, passed, "MetricMatches" if passed else "MetricMismatch",
                f"candidate's vector index uses {actual or 'no index'}, expected {expected.upper()}")


def self_recall(own_documents: Sequence[str], hits: Sequence[Sequence[str]]) -> float:
    """Share of sampled chunks whose own document is among their hits; 1 for an empty sample."""
    if not own_documents:
        return 1.0
    found = sum(1 for own, found_docs in zip(own_documents, hits, strict=True) if own in found_docs)
    return found / len(own_documents)


def recall_gate(recall: float, sampled: int, top_k: int, minimum: float) -> Gate:
    passed = recall >= minimum
    return Gate(GateName.SELF_RETRIEVAL, passed, "RecallMet" if passed else "RecallTooLow",
                f"{recall:.4f} of {sampled} sampled chunks find their document in the top {top_k} "
                f"(minimum {minimum})", round(recall, 6), minimum)


def overlap(active_documents: set[str], candidate_documents: set[str]) -> float:
    """|active ∩ candidate| / |active| for one query; 1 when the active returns nothing."""
    if not active_documents:
        return 1.0
    return len(active_documents & candidate_documents) / len(active_documents)


def mean_overlap(pairs: Sequence[tuple[set[str], set[str]]]) -> float:
    if not pairs:
        return 1.0
    return sum(overlap(a, c) for a, c in pairs) / len(pairs)


def overlap_gate(value: float, queries: int, top_k: int, minimum: float | None) -> Gate:
    measured = f"mean top-{top_k} document overlap with the active over {queries} queries is {value:.4f}"
    if minimum is None:
        return Gate(GateName.QUERY_OVERLAP, True, "NotGated", f"{measured} (not gated)", round(value, 6), None)
    passed = value >= minimum
    return Gate(GateName.QUERY_OVERLAP, passed, "OverlapMet" if passed else "OverlapTooLow",
                f"{measured} (minimum {minimum})", round(value, 6), minimum)


def verdict(gates: Sequence[Gate], counts: dict[str, int] | None = None) -> StepReport:
    """ok when every gated gate passed (an ungated one always passes)."""
    failed = [g for g in gates if not g.passed]
    if failed:
        return StepReport(Step.VALIDATE, False, "GateFailed",
                          "gates failed: " + "; ".join(f"{g.name.value}: {g.message}" for g in failed),
                          dict(counts or {}), tuple(gates))
    return StepReport(Step.VALIDATE, True, "Validated", f"all {len(gates)} gates passed",
                      dict(counts or {}), tuple(gates))


# -- the step ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A model as the embedder takes it: None is the bundled default, else a local path."""

    model: str | None = None
    backend: str = defaults.BACKEND
    quantize: str = defaults.QUANTIZE
    batch_size: int = defaults.BATCH_EMBED_BATCH_SIZE
    max_seq_length: int | None = None


@dataclass(frozen=True)
class ValidateSettings:
    candidate: str
    active: str
    candidate_model: ModelSpec
    active_model: ModelSpec = field(default_factory=ModelSpec)
    dimension: int | None = None  # expected; None: the candidate model's
    metric_type: str = defaults.METRIC_TYPE
    min_document_ratio: float = defaults.MIN_DOCUMENT_RATIO
    min_self_recall: float = defaults.MIN_SELF_RECALL
    min_recall_at_k: float | None = None  # the QueryOverlap threshold; None: reported only
    top_k: int = defaults.TOP_K
    sample_size: int = defaults.SAMPLE_SIZE
    sample_queries: tuple[str, ...] = ()


def _embedder(spec: ModelSpec):
    from tributary_workers.pipeline.embedder import Embedder, EmbedderConfig

    embedder = Embedder(EmbedderConfig(model=spec.model, batch_size=spec.batch_size, backend=spec.backend,
                                       quantize=spec.quantize, max_seq_length=spec.max_seq_length))
    embedder.warm_up()
    return embedder


def _check_model(info: coll.CollectionInfo, embedder, role: str) -> None:
    if info.model_id is not None and info.model_id != embedder.model_id:
        raise PermanentError(f"the {role} collection {info.name} holds embeddings of {info.model_id!r}, "
                             f"but validate was given model {embedder.model_id!r}")


def _search_documents(client: Any, collection: str, metric: str | None, vectors, top_k: int) -> list[set[str]]:
    """Per query vector: the distinct documents of its top-k chunks."""
    if len(vectors) == 0:
        return []
    params = {"metric_type": metric} if metric else {}
    results = client.search(collection, data=[v.tolist() for v in vectors], limit=top_k,
                            output_fields=["doc_id"], search_params=params)
    return [{hit["entity"]["doc_id"] for hit in hits} for hits in results]


def _sample_chunks(client: Any, collection: str, pks: Sequence[str]) -> list[dict]:
    rows = client.get(collection, ids=list(pks), output_fields=["pk", "doc_id", "text"]) if pks else []
    return sorted(rows, key=lambda row: row["pk"])


def validate(client: Any, settings: ValidateSettings, writer_config) -> StepReport:
    """Finish the candidate's bulk load (writer_config: index, metric, replicas) and measure the gates."""
    candidate = coll.describe(client, settings.candidate)
    active = coll.describe(client, settings.active)
    embedder = _embedder(settings.candidate_model)
    _check_model(candidate, embedder, "candidate")

    coll.index_writer(client, candidate, writer_config).finish_bulk_load()
    coll.ensure_servable(client, active, writer_config)  # a served collection normally is already

    candidate_scan = coll.scan(client, candidate.name, settings.sample_size)
    active_scan = coll.scan(client, active.name)
    gates = [ratio_gate(len(candidate_scan.documents), len(active_scan.documents), settings.min_document_ratio),
             dimension_gate(candidate.dimension, settings.dimension or embedder.dimension)]
    candidate_metric = coll.vector_metric(client, candidate.name)
    gates.append(metric_gate(candidate_metric, settings.metric_type))

    sample = _sample_chunks(client, candidate.name, candidate_scan.sample_pks)
    if embedder.dimension != candidate.dimension:
        gates.append(Gate(GateName.SELF_RETRIEVAL, False, "ModelDimensionMismatch",
                          f"the model makes {embedder.dimension}-dimension vectors, the candidate holds "
                          f"{candidate.dimension}: cannot search it", None, settings.min_self_recall))
    else:
        hits = _search_documents(client, candidate.name, candidate_metric,
                                 embedder.run([row["text"] for row in sample]), settings.top_k)
        recall = self_recall([row["doc_id"] for row in sample], hits)
        gates.append(recall_gate(recall, len(sample), settings.top_k, settings.min_self_recall))

    counts = {"active_documents": len(active_scan.documents), "candidate_documents": len(candidate_scan.documents),
              "candidate_rows": candidate_scan.rows, "sampled": len(sample)}
    if settings.sample_queries:
        queries = list(settings.sample_queries)
        active_embedder = _embedder(settings.active_model)
        _check_model(active, active_embedder, "active")
        active_docs = _search_documents(client, active.name, coll.vector_metric(client, active.name),
                                        active_embedder.run(queries), settings.top_k)
        candidate_docs = _search_documents(client, candidate.name, candidate_metric,
                                           embedder.run(queries), settings.top_k)
        value = mean_overlap(list(zip(active_docs, candidate_docs, strict=True)))
        gates.append(overlap_gate(value, len(queries), settings.top_k, settings.min_recall_at_k))
        counts["queries"] = len(queries)
    return verdict(gates, counts)
