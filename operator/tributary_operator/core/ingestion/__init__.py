"""IngestionJob's pure core: manifests (names, the Indexed Job, the checkpoint ConfigMap), policy
(which run should exist, where it writes) and status (what the cluster shows, as status fields).

No Kubernetes calls here: the controller reads the cluster, calls these functions and applies what
they return. Every function is unit-tested without a cluster.
"""

from tributary_operator.core.ingestion.manifests import (
    LABEL_COMPONENT,
    LABEL_JOB,
    LABEL_RUN,
    MAX_FAILURES_IN_STATUS,
    MAX_REASON_LENGTH,
    MAX_RUN_NAME,
    OperatorDefaults,
    ResolvedTarget,
    build_checkpoint_configmap,
    build_job,
    checkpoint_configmap_name,
    inline_target,
    one_off_run_name,
    run_key,
    scheduled_run_name,
    worker_env,
)
from tributary_operator.core.ingestion.policy import (
    CheckpointLocation,
    RunDecision,
    checkpoint_location,
    decide_run,
    index_ref,
    latest_tick,
    rejected_before,
    resolve_target,
    runs_to_delete,
    runs_to_suspend,
)
from tributary_operator.core.ingestion.status import (
    TERMINAL_PHASES,
    RunView,
    ShardProgress,
    compute_status,
    parse_indexes,
    shard_progress,
)

__all__ = [
    "LABEL_COMPONENT", "LABEL_JOB", "LABEL_RUN", "MAX_FAILURES_IN_STATUS", "MAX_REASON_LENGTH", "MAX_RUN_NAME",
    "TERMINAL_PHASES", "CheckpointLocation", "OperatorDefaults", "ResolvedTarget", "RunDecision", "RunView",
    "ShardProgress", "build_checkpoint_configmap", "build_job", "checkpoint_configmap_name", "checkpoint_location",
    "compute_status", "decide_run", "index_ref", "inline_target", "latest_tick", "one_off_run_name",
    "parse_indexes", "rejected_before",
    "resolve_target", "run_key", "runs_to_delete", "runs_to_suspend", "scheduled_run_name",
    "shard_progress", "worker_env",
]
