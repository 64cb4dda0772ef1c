"""Names of the environment variables the operator sets and the workers read (one place, both planes)."""

from __future__ import annotations

# --- both workers
COLLECTION = "TRIBUTARY_COLLECTION"
MILVUS_URI = "TRIBUTARY_MILVUS_URI"
MILVUS_TOKEN = "TRIBUTARY_MILVUS_TOKEN"  # from a Secret, never a flag
LEDGER_URL = "TRIBUTARY_LEDGER_URL"
MODEL = "TRIBUTARY_MODEL"
EMBED_BATCH_SIZE = "TRIBUTARY_EMBED_BATCH_SIZE"
MAX_TOKENS = "TRIBUTARY_MAX_TOKENS"
OVERLAP_TOKENS = "TRIBUTARY_OVERLAP_TOKENS"
REPLICAS = "TRIBUTARY_REPLICAS"
METRIC_TYPE = "TRIBUTARY_METRIC_TYPE"
INDEX_TYPE = "TRIBUTARY_INDEX_TYPE"
INDEX_PARAMS = "TRIBUTARY_INDEX_PARAMS"  # JSON object, passed to Milvus unchanged
MILVUS_DATABASE = "TRIBUTARY_MILVUS_DATABASE"
MAX_SEQUENCE_LENGTH = "TRIBUTARY_MAX_SEQUENCE_LENGTH"  # caps the chunk size below the model's own limit
DIMENSION = "TRIBUTARY_DIMENSION"  # checked against the model at warm-up
BACKEND = "TRIBUTARY_BACKEND"  # torch | onnx: what runs the model
QUANTIZE = "TRIBUTARY_QUANTIZE"  # none | int8 (ONNX only)
MODEL_CACHE = "TRIBUTARY_MODEL_CACHE"  # writable folder for exported ONNX models
METRICS_PORT = "TRIBUTARY_METRICS_PORT"
DEBUG = "TRIBUTARY_DEBUG"  # tracebacks instead of one-line errors
ALIAS = "TRIBUTARY_ALIAS"  # the Milvus alias an EmbeddingIndex serves (tributary-index-admin)

# --- tributary-index-admin's re-embedding steps (contract.reembed)
ACTIVE_COLLECTION = "TRIBUTARY_ACTIVE_COLLECTION"  # the collection a step reads from or compares with
ACTIVE_MODEL = "TRIBUTARY_ACTIVE_MODEL"  # the active collection's model (validate: query overlap)
ACTIVE_QUANTIZE = "TRIBUTARY_ACTIVE_QUANTIZE"
EXPECT_COLLECTION = "TRIBUTARY_EXPECT_COLLECTION"  # swap: the alias must point here (or at the target)
RECHUNK = "TRIBUTARY_RECHUNK"  # "true": the chunking changed, re-chunk from the stored parsed text
MIN_DOCUMENT_RATIO = "TRIBUTARY_MIN_DOCUMENT_RATIO"
MIN_SELF_RECALL = "TRIBUTARY_MIN_SELF_RECALL"
MIN_RECALL_AT_K = "TRIBUTARY_MIN_RECALL_AT_K"
TOP_K = "TRIBUTARY_TOP_K"
SAMPLE_QUERIES = "TRIBUTARY_SAMPLE_QUERIES"  # JSON list of strings
SAMPLE_SIZE = "TRIBUTARY_SAMPLE_SIZE"  # chunks sampled for self-retrieval

# --- batch worker
SOURCE = "TRIBUTARY_SOURCE"  # space-separated
INCLUDE = "TRIBUTARY_INCLUDE"  # comma-separated
EXCLUDE = "TRIBUTARY_EXCLUDE"  # comma-separated
CHECKPOINT_URL = "TRIBUTARY_CHECKPOINT_URL"
JOB_ID = "TRIBUTARY_JOB_ID"
SHARD_INDEX = "TRIBUTARY_SHARD_INDEX"
JOB_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"  # set by Kubernetes in Indexed Jobs
SHARD_COUNT = "TRIBUTARY_SHARD_COUNT"
MAX_CONCURRENCY = "TRIBUTARY_MAX_CONCURRENCY"
BULK_LOAD = "TRIBUTARY_BULK_LOAD"  # "true"
CREATE_COLLECTION = "TRIBUTARY_CREATE_COLLECTION"  # "false": an index's collection is not created by a write
PARTIAL_EXIT_CODE = "TRIBUTARY_PARTIAL_EXIT_CODE"
REPORT_FILE = "TRIBUTARY_REPORT_FILE"
PRUNE = "TRIBUTARY_PRUNE"  # "true": remove documents gone from the source
PRUNE_MAX_FRACTION = "TRIBUTARY_PRUNE_MAX_FRACTION"
SOURCE_ID = "TRIBUTARY_SOURCE_ID"  # who "this source" is for pruning; the operator: ingestionjob/<ns>/<name>

# --- streaming worker
INDEX = "TRIBUTARY_INDEX"
REDIS_URL = "TRIBUTARY_REDIS_URL"
STREAM = "TRIBUTARY_STREAM"
GROUP = "TRIBUTARY_GROUP"
DEAD_LETTER_STREAM = "TRIBUTARY_DEAD_LETTER_STREAM"
CONSUMER = "TRIBUTARY_CONSUMER"
POD_NAME = "POD_NAME"  # the Downward API's metadata.name
MAX_BATCH_SIZE = "TRIBUTARY_MAX_BATCH_SIZE"
MAX_WAIT_MS = "TRIBUTARY_MAX_WAIT_MS"
CLAIM_IDLE_MS = "TRIBUTARY_CLAIM_IDLE_MS"
MAX_DELIVERIES = "TRIBUTARY_MAX_DELIVERIES"
RETRY_ATTEMPTS = "TRIBUTARY_RETRY_ATTEMPTS"
DRAIN_TIMEOUT_S = "TRIBUTARY_DRAIN_TIMEOUT_S"
WARM_UP_TIMEOUT_S = "TRIBUTARY_WARM_UP_TIMEOUT_S"  # retry unreachable Redis/Milvus at start this long; 0: forever

# --- the local mode
HOME = "TRIBUTARY_HOME"
