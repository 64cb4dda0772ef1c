"""StreamPipeline's kopf daemon: one loop per pipeline, thin over the pure core.

Each pass (``reconcile``) reads the cluster and the pipeline's Redis, calls the pure core
(core.streampipeline: checks, manifests, scaling, status) and applies what it returns: the worker
Deployment (created, its template rolled when it changed, spec.replicas set unless an HPA owns
them), the routing record, the backpressure record the producers follow, consumers of gone pods
deleted, the status and an Event per scale step.

A daemon rather than a timer, because the interval is per object (scaling.pollingIntervalSeconds)
and because a pipeline at zero replicas must wake on its first event, not on the next poll: while
at zero the loop checks the group's backlog every WAKE_POLL_S (one XINFO, no API calls). A changed
spec (generation) is noticed within a tick. The scale history lives in the loop: an operator
restart starts a new one, which never scales down before a full window was seen.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf
from pydantic import ValidationError
from tributary_workers.contract.backpressure import BackpressureRecord, ttl_for_interval
from tributary_workers.errors import explain

from tributary_operator import kube, metrics, queues
from tributary_operator.api.v1alpha1 import GROUP, VERSION, EmbeddingIndex, StreamPipeline
from tributary_operator.controllers.ingestionjob import DEFAULTS
from tributary_operator.controllers.status import write_status
from tributary_operator.core.conditions import ConditionSpec, Problem, utc_now
from tributary_operator.core.streampipeline import checks, manifests, scaling
from tributary_operator.core.pods import service_account_name
from tributary_operator.core.streampipeline.status import stream_status
from tributary_operator.core.targets import index_target

PLURAL = "streampipelines"
WAKE_POLL_S = 0.5  # at zero replicas: how often the backlog is checked (bench/scale_reaction.py measures it)
SCALING_POLL_S = 1.0  # while replicas are on their way: the status follows the Deployment closely
ERROR_BACKOFF_S = 5.0


@kopf.daemon(GROUP, VERSION, PLURAL, id="autoscaler", cancellation_timeout=10.0)
def run_pipeline(stopped: kopf.DaemonStopped, body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
    loop = PipelineLoop(body, logger)
    try:
        while not stopped:
            stopped.wait(loop.tick())
    finally:
        if stopped.reason is not None and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED:
            loop.forget_backpressure()  # not on an operator restart: the next operator goes on writing it
        metrics.pipeline_forgotten(body["metadata"]["namespace"], body["metadata"]["name"])


class PipelineLoop:
    """The state one pipeline's daemon keeps between passes: the scale history, when it last
    reconciled, what it wrote last (the live body may lag behind its own status writes)."""

    def __init__(self, body: kopf.Body, logger: logging.Logger):
        self.body, self.logger = body, logger
        self.history = scaling.ScaleHistory()
        self.generation: int | None = None
        self.last_pass = float("-inf")
        self.status: dict[str, Any] | None = None
        self.wake: tuple[Any, str, str] | None = None  # (redis client, stream, group) while at zero
        self.interval = 15.0
        self.scaling = False
        self.published: tuple[Any, str, str] | None = None  # (redis client, stream, pipeline) of the record

    def tick(self) -> float:
        """One step; returns how long to wait before the next."""
        now = time.monotonic()
        generation = self.body["metadata"].get("generation")
        due = (generation != self.generation or now - self.last_pass >= self.interval
               or (self.scaling and now - self.last_pass >= SCALING_POLL_S) or self._woken())
        if not due:
            return WAKE_POLL_S
        self.generation, self.last_pass = generation, now
        try:
            with metrics.reconciling("StreamPipeline"):
                self.reconcile()
        except Exception as exc:  # noqa: BLE001 - the reason goes on the object; the next pass retries
            self.logger.exception("reconcile failed")
            self._write({}, [ConditionSpec("Ready", False, "ReconcileError", kube.error_text(exc))])
            return ERROR_BACKOFF_S
        return WAKE_POLL_S

    def _woken(self) -> bool:
        """At zero replicas: has anything arrived? One XINFO GROUPS, no Kubernetes calls."""
        if self.wake is None:
            return False
        conn, stream, group = self.wake
        backlog = scaling.estimate_backlog(queues.observe(conn, stream, group, count_limit=1))
        return bool(backlog.value) or (backlog.value is None and backlog.source != "unreachable")

    # --- one pass ---------------------------------------------------------------------------------

    def reconcile(self) -> None:
        try:
            sp = StreamPipeline.from_body(self.body)
        except ValidationError as exc:
            self.wake = None
            self._write({"phase": "Failed"}, [ConditionSpec(
                "Ready", False, "InvalidSpec", f"the spec does not parse: {explain(exc, 'invalid spec')}")])
            return
        self.interval = float(sp.spec.scaling.polling_interval_seconds)
        namespace = sp.metadata["namespace"]
        deps = gather(sp)
        problem = checks.preflight(sp, deps, DEFAULTS)
        if problem is not None:
            self.wake = None
            self._write({"phase": "Pending"}, [ConditionSpec("Ready", False, problem.reason, problem.message)])
            return
        index = deps.index
        target = index_target(index)
        queue = sp.spec.queue
        url = kube.read_secret_key(namespace, queue.redis_secret_ref.name, queue.redis_secret_ref.key) or ""
        conn = queues.client_for(url)

        routing_problem, generation = self._sync_routing(conn, index)
        observation = queues.observe(conn, queue.stream, queue.group, scaling.count_limit(sp.spec))
        name = manifests.worker_name(sp)
        deployment = kube.get_deployment(namespace, name)
        hpa = kube.autoscalers_of(namespace, "Deployment", name)
        current = int((deployment or {}).get("spec", {}).get("replicas") or 0)
        decision = scaling.decide(observation, sp.spec, self.history, time.monotonic(), current=current,
                                  hpa=bool(hpa), reembedding=bool(index.status.candidate_collection))
        self.history = decision.history

        wanted = manifests.build_worker_deployment(sp, index, target, DEFAULTS, decision.replicas)
        kopf.adopt(wanted, owner=self.body)
        if deployment is None:
            kube.create_if_absent(wanted)
            deployment = wanted
            self.logger.info("created worker Deployment %s with %d replicas", name, decision.replicas)
        else:
            patch = manifests.deployment_patch(deployment, wanted, replicas=decision.replicas if decision.patch else None)
            if patch is not None:
                deployment = kube.patch_deployment(namespace, name, patch)
                if "template" in patch.get("spec", {}):
                    kopf.info(self.body, reason="RolledOut", message=f"worker template changed: rolling {name}")
        event = scaling.scale_event(decision)
        if event is not None:
            kopf.event(self.body, type=event.type, reason=event.reason, message=event.message)
            self.logger.info("%s: %s", event.reason, event.message)

        selector = ",".join(f"{k}={v}" for k, v in manifests.selector_labels(sp).items())
        live = {p["metadata"]["name"] for p in kube.list_pods(namespace, selector)}
        routing = None
        if observation.reachable:
            self._delete_gone_consumers(conn, sp, live, manifests.routing_index(index))
            routing = self._routing_status(conn, index, live, generation)
        self.wake = (conn, queue.stream, queue.group) if decision.replicas == 0 else None

        shown = deployment.get("status") or {}
        replicas, ready = int(shown.get("replicas") or 0), int(shown.get("readyReplicas") or 0)
        self.scaling = replicas != decision.replicas or ready != decision.replicas
        base = self._base_status()
        fields, conditions = stream_status(
            sp.spec, decision, replicas=replicas, ready_replicas=ready, conditions=base.get("conditions"),
            last_scale_time=base.get("lastScaleTime"), generation=sp.metadata.get("generation"), now=utc_now())
        if routing is not None:
            fields["routing"] = routing
        if routing_problem is not None and observation.reachable:
            conditions = [c for c in conditions if c.type != "Ready"] + [
                ConditionSpec("Ready", False, routing_problem.reason, routing_problem.message)]
        if observation.reachable:
            self._publish_backpressure(conn, sp, decision.backlog.value, conditions)
        metrics.pipeline_observed(namespace, sp.metadata["name"], decision.backlog.value, decision.replicas,
                                  replicas, decision.reason)
        self._write(fields, conditions)

    def _sync_routing(self, conn, index: EmbeddingIndex) -> tuple[Problem | None, int | None]:
        try:
            generation, written = queues.sync_routing(conn, manifests.routing_index(index),
                                                      manifests.routing_targets(index))
        except queues.RedisUnavailable:
            return None, None  # the observation says it too: Degraded
        except ValueError as exc:  # a target Milvus would not accept as a collection name
            return Problem("InvalidRouting", f"cannot write the routing record: {exc}"), None
        if written:
            self.logger.info("routing record of %s: generation %d", manifests.routing_index(index), generation)
        return None, generation

    def _routing_status(self, conn, index: EmbeddingIndex, live: set[str], generation: int | None) -> dict | None:
        """What the EmbeddingIndex waits on before a backfill or a retirement: every worker applied it."""
        if generation is None:
            return None
        try:
            applied = queues.routing_applied(conn, manifests.routing_index(index), live, generation)
        except queues.RedisUnavailable:
            return None
        return {"targets": [t["collection"] for t in manifests.routing_targets(index)],
                "generation": generation, "applied": applied}

    def _publish_backpressure(self, conn, sp: StreamPipeline, backlog: int | None,
                              conditions: list[ConditionSpec]) -> None:
        """spec.backpressure and the Backpressure condition, for the producers (contract.backpressure)."""
        on = any(c.type == "Backpressure" and c.status for c in conditions)
        ttl = ttl_for_interval(sp.spec.scaling.polling_interval_seconds)
        state = BackpressureRecord(
            high=sp.spec.backpressure.high_watermark, low=sp.spec.backpressure.low_watermark, on=on,
            backlog=backlog, group=sp.spec.queue.group, at=time.time(), ttl=ttl,
            pipeline=f"{sp.metadata['namespace']}/{sp.metadata['name']}")
        try:
            if queues.publish_backpressure(conn, sp.spec.queue.stream, state, ttl):
                self.logger.debug("backpressure record of %s: %s", sp.spec.queue.stream, state.to_json())
        except queues.RedisUnavailable:
            return  # the observation says it too: Degraded; the key expires on its own
        self.published = (conn, sp.spec.queue.stream, state.pipeline)

    def forget_backpressure(self) -> None:
        """The pipeline is deleted: its record goes now, not after its TTL."""
        if self.published is not None:
            try:
                queues.forget_backpressure(*self.published)
            except queues.RedisUnavailable:
                return  # it expires on its own
            self.logger.info("deleted: the backpressure record of %s is removed", self.published[1])

    def _delete_gone_consumers(self, conn, sp: StreamPipeline, live: set[str], index: str) -> None:
        try:
            gone = queues.delete_gone_consumers(conn, sp.spec.queue.stream, sp.spec.queue.group, live)
            queues.forget_applied(conn, index, gone)
        except queues.RedisUnavailable:
            return
        if gone:
            self.logger.info("deleted consumers of gone pods: %s", ", ".join(sorted(gone)))

    # --- status -------------------------------------------------------------------------------------

    def _base_status(self) -> dict[str, Any]:
        return dict(self.status if self.status is not None else (self.body.get("status") or {}))

    def _write(self, fields: dict[str, Any], conditions: list[ConditionSpec]) -> None:
        """write_status's rules (no-op writes skipped, one Event per change of cause), sent through
        the status subresource: a daemon has no handler patch that kopf applies."""
        patch = kopf.Patch()
        status = self._base_status()
        changes = write_status(self.body, patch, status, fields, conditions, self.body["metadata"].get("generation"))
        if changes:
            meta = self.body["metadata"]
            written = kube.patch_custom_status(meta["namespace"], PLURAL, meta["name"], changes)
            self.status = dict(written.get("status") or {})
        elif self.status is None:
            self.status = status


def gather(sp: StreamPipeline) -> checks.Dependencies:
    namespace = sp.metadata["namespace"]
    body = kube.get_custom(namespace, "embeddingindexes", sp.spec.index_ref.name)
    index = EmbeddingIndex.from_body(body) if body else None
    secrets = {name: kube.secret_keys(namespace, name) for name, _, _ in checks.secret_needs(sp, index)}
    account = kube.service_account_exists(namespace, service_account_name(sp.spec.worker, DEFAULTS))
    return checks.Dependencies(index, secrets, account)
