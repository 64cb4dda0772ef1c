"""The Jobs of a blue-green re-embedding, pure: one `tributary-index-admin <step>` Job per step.

Names are deterministic (``<index>-<step>-<hash of what the step acts on>``), so an operator that
was killed finds the Job it made and never makes a second. Every step's pod gets the Milvus token
and the ledger's Redis URL by Secret reference, and writes a contract.reembed.StepReport to its
termination message.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from tributary_workers.contract import env as ENV
from tributary_workers.contract.reembed import Step

from tributary_operator.api.v1alpha1 import CollectionSpec, EmbeddingIndex
from tributary_operator.core.embeddingindex.manifests import MAX_JOB_NAME, admin_job, milvus_env, model_env
from tributary_operator.core.pods import OperatorDefaults, env_var, secret_env_var
from tributary_operator.core.targets import active_spec


@dataclass(frozen=True)
class StepRequest:
    """One step to run: on ``collection`` (the candidate; the swap's target; what retire drops),
    reading from or expecting ``source`` (the active collection)."""

    step: Step
    collection: str
    source: str | None = None
    rechunk: bool = False
    tick: int | None = None  # a periodic step's period (drift): one Job per period


def step_job_name(ei: EmbeddingIndex, request: StepRequest) -> str:
    key = json.dumps([request.collection, request.source] + ([request.tick] if request.tick is not None else []),
                     separators=(",", ":"))
    suffix = f"-{request.step.value}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    return f"{ei.metadata['name'][:MAX_JOB_NAME - len(suffix)]}{suffix}"


def chunking_env(spec: CollectionSpec) -> list[dict[str, Any]]:
    env = [env_var(ENV.OVERLAP_TOKENS, spec.chunking.overlap_tokens)]
    if spec.chunking.max_tokens is not None:
        env.append(env_var(ENV.MAX_TOKENS, spec.chunking.max_tokens))
    return env


def step_env(ei: EmbeddingIndex, request: StepRequest) -> list[dict[str, Any]]:
    spec = ei.spec
    env = [env_var(ENV.ALIAS, spec.alias), env_var(ENV.INDEX, spec.alias),
           env_var(ENV.COLLECTION, request.collection), *milvus_env(spec)]
    if request.source:
        env.append(env_var(ENV.ACTIVE_COLLECTION if request.step is not Step.SWAP else ENV.EXPECT_COLLECTION,
                           request.source))
    if spec.ledger is not None and request.step is not Step.SWAP:
        ref = spec.ledger.redis_secret_ref
        env.append(secret_env_var(ENV.LEDGER_URL, ref.name, ref.key))
    if request.step in (Step.BACKFILL, Step.CATCHUP, Step.VALIDATE):
        env += model_env(spec.model)
        env += chunking_env(CollectionSpec(model=spec.model, chunking=spec.chunking, index=spec.index))
        if request.rechunk:
            env.append(env_var(ENV.RECHUNK, "true"))
    if request.step is Step.BACKFILL:
        env.append(env_var(ENV.SHARD_COUNT, spec.reembedding.parallelism))
        env.append(env_var(ENV.JOB_ID, step_job_name(ei, request)))
    if request.step is Step.VALIDATE:
        gates = spec.validation
        active = active_spec(ei).model
        env += [env_var(ENV.MIN_DOCUMENT_RATIO, gates.min_document_ratio),
                env_var(ENV.MIN_SELF_RECALL, gates.min_self_recall),
                env_var(ENV.TOP_K, gates.top_k), env_var(ENV.SAMPLE_SIZE, gates.sample_size),
                env_var(ENV.ACTIVE_MODEL, active.name)]
        if active.quantize is not None:
            env.append(env_var(ENV.ACTIVE_QUANTIZE, active.quantize))
        if gates.sample_queries:
            env.append(env_var(ENV.SAMPLE_QUERIES, json.dumps(list(gates.sample_queries))))
        if gates.min_recall_at_k is not None:
            env.append(env_var(ENV.MIN_RECALL_AT_K, gates.min_recall_at_k))
    return env


def build_step_job(ei: EmbeddingIndex, request: StepRequest, defaults: OperatorDefaults) -> dict[str, Any]:
    completions = ei.spec.reembedding.parallelism if request.step is Step.BACKFILL else 1
    return admin_job(ei, step_job_name(ei, request), request.step.value, [request.step.value],
                     step_env(ei, request), defaults, completions=completions)
