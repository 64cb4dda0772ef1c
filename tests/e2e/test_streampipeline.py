"""StreamPipeline end to end: the real control plane (the Deployment and ReplicaSet controllers), the
operator, the process kubelet running `tributary-stream-worker` pods, a real redis-server and a
real milvus-lite server.

- a burst wakes the pipeline from zero, scales it up, every document ends at its newest version
  exactly once, and it scales back to zero with the gone pods' consumers deleted;
- 2,000 events with a scale-down while batches are in flight: nothing lost or duplicated, and one
  event then wakes the pipeline again;
- Redis unreachable: Degraded, replicas held, recovered without a hand;
- an HPA on the workers: the operator stands back (ScalingActive=False, ExternalAutoscaler);
- a changed spec rolls the Deployment; a missing index or Secret is named on the object;
- spec.backpressure reaches `tributary publish` through the operator's record of the stream (with a
  TTL), which goes with the pipeline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import redis
import yaml
from harness.servers import free_port
from harness.waiting import wait_for
from tributary_workers.localservers import start_redis
from tributary_workers.pipeline.writer import open_client

DOCS, VERSIONS = 30, 3


def apply(kube, namespace, manifest: dict) -> None:
    kube.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(manifest))


def get_json(kube, namespace, *args) -> dict:
    return json.loads(kube.kubectl("-n", namespace, "get", *args, "-o", "json").stdout)


def pipeline(name="live", index="handbook", secret="stream-redis", **spec) -> dict:
    return {"apiVersion": "tributary.dev/v1alpha1", "kind": "StreamPipeline", "metadata": {"name": name},
            "spec": {"indexRef": {"name": index},
                     "queue": {"redisSecretRef": {"name": secret}, "stream": f"docs:{name}", "group": "workers"},
                     **spec}}


def redis_secret(kube, namespace, url, name="stream-redis") -> None:
    kube.kubectl("-n", namespace, "create", "secret", "generic", name, f"--from-literal=url={url}")


def status(kube, namespace, name="live") -> dict:
    return get_json(kube, namespace, "streampipeline", name).get("status") or {}


def condition(st: dict, kind: str) -> dict:
    return next((c for c in st.get("conditions", []) if c["type"] == kind), {})


def wait_status(kube, namespace, predicate, message, name="live", timeout=120) -> dict:
    return wait_for(lambda: (st := status(kube, namespace, name)) and predicate(st) and st,
                    timeout=timeout, interval=0.3, message=message)


def deployment(kube, namespace, name="live-worker") -> dict:
    return get_json(kube, namespace, "deployment", name)


def events(kube, namespace, reason, name="live") -> list[str]:
    items = get_json(kube, namespace, "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return [e["message"] for e in items if e["reason"] == reason]


def newest_rows(uri, alias) -> dict[str, set[int]]:
    client = open_client(uri)
    try:
        rows = client.query(alias, filter="", output_fields=["doc_id", "version", "chunk_index"], limit=16384)
    finally:
        client.close()
    versions: dict[str, set[int]] = defaultdict(set)
    for row in rows:
        versions[row["doc_id"]].add(int(row["version"]))
    return dict(versions)


def event(doc: int, version: int) -> str:
    return json.dumps({"op": "upsert", "doc_id": f"doc-{doc:03d}.md", "version": version,
                       "content": f"# Document {doc}\n\nVersion {version} of document {doc} about streams."})


@pytest.fixture
def stream_redis(kube, namespace, redis_server):
    redis_secret(kube, namespace, redis_server.url)
    conn = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield conn
    conn.close()


def test_burst_wakes_from_zero_scales_up_writes_newest_once_and_returns_to_zero(
        kube, namespace, ready_index, stream_redis):
    apply(kube, namespace, pipeline(
        replicas={"min": 0, "max": 3},
        scaling={"targetLagPerReplica": 20, "pollingIntervalSeconds": 1, "scaleDownStabilizationSeconds": 3,
                 "scaleToZero": True}))
    idle = wait_status(kube, namespace, lambda s: s.get("phase") == "Idle", "pipeline Idle at zero")
    assert condition(idle, "Ready")["status"] == "True" and idle["desiredReplicas"] == 0
    assert deployment(kube, namespace)["spec"]["replicas"] == 0
    routing = json.loads(stream_redis.get(f"tributary:routing:{ready_index.alias}"))
    assert [t["collection"] for t in routing["targets"]] == [ready_index.collection]

    # One atomic burst: every version of every document, oldest first, so the newest must win.
    pipe = stream_redis.pipeline(transaction=True)
    for version in range(1, VERSIONS + 1):
        for doc in range(DOCS):
            pipe.xadd("docs:live", {"event": event(doc, version)})
    sent = time.monotonic()
    pipe.execute()
    woke = wait_for(lambda: deployment(kube, namespace)["spec"]["replicas"] >= 1 and time.monotonic(),
                    timeout=30, interval=0.05, message="the Deployment wakes from zero")
    print(f"wake from zero: {woke - sent:.2f}s")
    assert woke - sent < 5.0  # a short poll, not KEDA's 30 s + the HPA's 15 s
    assert deployment(kube, namespace)["spec"]["replicas"] == 3  # 90 events / 20 per replica, capped at max
    (scaled_up,) = events(kube, namespace, "ScaledUp")
    assert scaled_up.startswith("0→3: backlog 90")

    def converged():
        rows = newest_rows(ready_index.milvus_uri, ready_index.alias)
        return len(rows) == DOCS and all(v == {VERSIONS} for v in rows.values()) and rows
    wait_for(converged, timeout=300, interval=1.0, message="every document at its newest version, once")
    # The newest versions can land while older ones are still in flight (fenced by the ledger, then
    # acknowledged), so the group drains shortly after convergence, not necessarily before it.
    def drained():
        return next(g for g in stream_redis.xinfo_groups("docs:live") if g["name"] == "workers")["pending"] == 0
    wait_for(drained, timeout=60, interval=0.5, message="every entry acknowledged")

    back = wait_status(kube, namespace, lambda s: s.get("phase") == "Idle" and s.get("replicas") == 0,
                       "scaled back to zero", timeout=180)
    assert back["backlog"] == 0 and events(kube, namespace, "ScaledToZero")
    wait_for(lambda: not stream_redis.xinfo_consumers("docs:live", "workers"), timeout=60, interval=1.0,
             message="the gone pods' consumers are deleted from the group")
    assert not stream_redis.hgetall(f"tributary:routing:{ready_index.alias}:applied")  # their reports too
    assert len(newest_rows(ready_index.milvus_uri, ready_index.alias)) == DOCS


def test_a_2000_event_burst_survives_a_scale_down_mid_flight_and_one_event_wakes_it_again(
        kube, namespace, ready_index, stream_redis):
    docs, versions = 200, 10  # 2,000 events: every version of every document, oldest first
    spec = dict(replicas={"min": 0, "max": 3}, batching={"maxBatchSize": 16},
                scaling={"targetLagPerReplica": 50, "pollingIntervalSeconds": 1,
                         "scaleDownStabilizationSeconds": 3, "scaleToZero": True})
    apply(kube, namespace, pipeline(**spec))
    wait_status(kube, namespace, lambda s: s.get("phase") == "Idle", "pipeline Idle at zero")
    pipe = stream_redis.pipeline(transaction=True)
    for version in range(1, versions + 1):
        for doc in range(docs):
            pipe.xadd("docs:live", {"event": event(doc, version)})
    pipe.execute()
    wait_status(kube, namespace, lambda s: s.get("replicas") == 3, "three workers", timeout=120)
    # Scale down while batches are in flight: the removed pods drain and acknowledge theirs.
    busy = wait_status(kube, namespace, lambda s: 0 < (s.get("backlog") or 0) < docs * versions - 100,
                       "workers busy with a backlog left", timeout=180)
    apply(kube, namespace, pipeline(**{**spec, "replicas": {"min": 0, "max": 1}}))
    wait_for(lambda: deployment(kube, namespace)["spec"]["replicas"] == 1, timeout=30, interval=0.3,
             message="scaled down to one with work in flight")
    print(f"scaled down with a backlog of {busy['backlog']}")

    def converged():
        rows = newest_rows(ready_index.milvus_uri, ready_index.alias)
        return len(rows) == docs and all(v == {versions} for v in rows.values()) and rows
    wait_for(converged, timeout=600, interval=2.0, message="every document at its newest version, once")
    client = open_client(ready_index.milvus_uri)
    try:
        rows = client.query(ready_index.alias, filter="", output_fields=["doc_id", "chunk_index"], limit=16384)
    finally:
        client.close()
    assert len(rows) == len({(r["doc_id"], r["chunk_index"]) for r in rows})  # nothing duplicated
    wait_status(kube, namespace, lambda s: s.get("phase") == "Idle" and s.get("replicas") == 0,
                "back to zero", timeout=180)
    assert not stream_redis.xpending("docs:live", "workers")["pending"]

    stream_redis.xadd("docs:live", {"event": event(docs, 1)})  # one event wakes it and becomes searchable
    wait_for(lambda: f"doc-{docs:03d}.md" in newest_rows(ready_index.milvus_uri, ready_index.alias),
             timeout=120, interval=1.0, message="a single event woke the pipeline and is searchable")


def test_unreachable_redis_degrades_holds_replicas_and_recovers(kube, namespace, ready_index, tmp_path):
    port = free_port()
    server = start_redis(tmp_path / "redis", port=port)
    try:
        redis_secret(kube, namespace, server.url)
        apply(kube, namespace, pipeline(scaling={"pollingIntervalSeconds": 1}))
        wait_status(kube, namespace, lambda s: s.get("phase") == "Running" and s.get("replicas") == 1,
                    "Running with one worker", timeout=180)
        server.stop()
        degraded = wait_status(kube, namespace, lambda s: s.get("phase") == "Degraded", "Degraded", timeout=60)
        assert condition(degraded, "Ready")["reason"] == "RedisUnavailable"
        assert condition(degraded, "Degraded")["status"] == "True"
        assert deployment(kube, namespace)["spec"]["replicas"] == 1  # held, never scaled on an unknown backlog
        assert "redis://" not in json.dumps(degraded)  # the URL (it may hold a password) is never shown
        server = start_redis(tmp_path / "redis", port=port)
        wait_status(kube, namespace, lambda s: s.get("phase") == "Running" and condition(s, "Degraded").get(
            "status") == "False", "recovered", timeout=90)
    finally:
        server.stop()


def test_an_hpa_owns_the_replicas_and_a_spec_change_rolls_the_workers(kube, namespace, ready_index, stream_redis):
    apply(kube, namespace, pipeline(scaling={"pollingIntervalSeconds": 1, "scaleDownStabilizationSeconds": 1}))
    wait_status(kube, namespace, lambda s: s.get("phase") == "Running", "Running", timeout=180)
    before = deployment(kube, namespace)

    apply(kube, namespace, pipeline(scaling={"pollingIntervalSeconds": 1, "scaleDownStabilizationSeconds": 1},
                                    batching={"maxBatchSize": 7}))
    rolled = wait_for(lambda: (d := deployment(kube, namespace))["metadata"]["generation"] > before["metadata"][
        "generation"] and d, timeout=30, interval=0.3, message="the template is patched")
    env = {e["name"]: e.get("value") for e in rolled["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRIBUTARY_MAX_BATCH_SIZE"] == "7"
    wait_for(lambda: (d := deployment(kube, namespace)).get("status", {}).get("updatedReplicas") == 1
             and d["status"].get("readyReplicas") == 1 and d["status"].get("replicas") == 1,
             timeout=180, interval=0.5, message="the rolling update finishes")
    assert events(kube, namespace, "RolledOut")

    apply(kube, namespace, {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "workers"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "live-worker"},
                 "minReplicas": 1, "maxReplicas": 4,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                     "type": "Utilization", "averageUtilization": 80}}}]}})
    held = wait_status(kube, namespace, lambda s: condition(s, "ScalingActive").get("reason") == "ExternalAutoscaler",
                       "the operator stands back", timeout=30)
    assert condition(held, "ScalingActive")["status"] == "False"
    kube.kubectl("-n", namespace, "scale", "deployment", "live-worker", "--replicas=2")
    # Backlog zero and min 1 would scale it down within a second; with an HPA the 2 is left alone.
    wait_status(kube, namespace, lambda s: s.get("desiredReplicas") == 2 and s.get("replicas") == 2,
                "the hand-set count is kept", timeout=120)
    assert deployment(kube, namespace)["spec"]["replicas"] == 2


def test_a_missing_index_is_named_on_the_object_and_no_workers_start(kube, namespace, operator, local_node):
    apply(kube, namespace, pipeline(index="nowhere"))
    pending = wait_status(kube, namespace, lambda s: condition(s, "Ready").get("reason") == "IndexNotFound",
                          "IndexNotFound", timeout=30)
    assert pending["phase"] == "Pending" and "EmbeddingIndex nowhere" in condition(pending, "Ready")["message"]
    assert "Warning" in kube.kubectl("-n", namespace, "get", "events", "--field-selector",
                                     "involvedObject.name=live").stdout
    assert kube.kubectl("-n", namespace, "get", "deployment", "live-worker", check=False).returncode != 0


def test_local_example_keeps_the_index_current_from_published_events(kube, namespace, operator, local_node,
                                                                      milvus_server, redis_server, tmp_path):
    """examples/local: the index, then the pipeline; `tributary publish` feeds its stream."""
    local = Path(__file__).resolve().parents[2] / "examples" / "local"
    index = yaml.safe_load((local / "embeddingindex.yaml").read_text())
    index["spec"]["milvus"]["uri"] = milvus_server.uri  # the session's servers, not the default ports
    secret, sp = yaml.safe_load_all((local / "streampipeline.yaml").read_text())
    secret["stringData"]["url"] = redis_server.url
    sp["spec"]["scaling"]["scaleDownStabilizationSeconds"] = 2  # the example's 60 s, shortened for the test
    for manifest in (sp, secret, index):  # any order, as a GitOps sync applies them
        apply(kube, namespace, manifest)
    name = sp["metadata"]["name"]
    wait_status(kube, namespace, lambda s: s.get("phase") == "Idle", "the example pipeline Idle", name=name,
                timeout=180)

    events_file = tmp_path / "events.jsonl"
    events_file.write_text("\n".join([event(1, 1), event(2, 1), event(1, 2)]) + "\n")
    published = subprocess.run(
        [str(Path(sys.executable).parent / "tributary"), "publish", "--index", "handbook", "--stream",
         sp["spec"]["queue"]["stream"], "--group", sp["spec"]["queue"]["group"], str(events_file)],
        env={**os.environ, "TRIBUTARY_REDIS_URL": redis_server.url},
        capture_output=True, text=True, timeout=60)
    assert published.returncode == 0, published.stderr
    rows = wait_for(lambda: (r := newest_rows(milvus_server.uri, "handbook")) and {
        "doc-001.md", "doc-002.md"} <= set(r) and r["doc-001.md"] == {2} and r, timeout=240, interval=1.0,
        message="the published events are in the index, doc-001 at version 2")
    assert rows["doc-002.md"] == {1}
    wait_status(kube, namespace, lambda s: s.get("phase") == "Idle" and s.get("replicas") == 0,
                "back to zero", name=name, timeout=120)


def test_a_restarted_operator_takes_over_the_same_workers(kube, namespace, ready_index, stream_redis, operator,
                                                          tmp_path):
    from harness.operator import launch
    from tributary_workers.localservers import stop

    apply(kube, namespace, pipeline(replicas={"min": 2, "max": 2}, scaling={"pollingIntervalSeconds": 1}))
    wait_status(kube, namespace, lambda s: s.get("phase") == "Running" and s.get("replicas") == 2,
                "Running with two workers", timeout=180)
    before = deployment(kube, namespace)["metadata"]["uid"]
    operator.proc.kill()
    operator.proc.wait(timeout=10)
    again = launch(kube.kubeconfig, namespace, tmp_path / "operator-2.log")
    try:
        apply(kube, namespace, pipeline(replicas={"min": 2, "max": 2}, scaling={"pollingIntervalSeconds": 1},
                                        batching={"maxWaitMs": 9}))
        done = wait_status(kube, namespace, lambda s: s.get("observedGeneration") == 2 and s.get(
            "phase") == "Running" and s.get("replicas") == 2, "the new operator reconciles", timeout=180)
        dep = deployment(kube, namespace)
        assert dep["metadata"]["uid"] == before and dep["spec"]["replicas"] == 2  # the same Deployment
        env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["TRIBUTARY_MAX_WAIT_MS"] == "9" and done["desiredReplicas"] == 2
        assert len(get_json(kube, namespace, "deployments")["items"]) == 1
    finally:
        stop(again.proc)


def test_spec_backpressure_reaches_the_producers_and_goes_with_the_pipeline(
        kube, namespace, ready_index, stream_redis, redis_server, tmp_path):
    apply(kube, namespace, pipeline(replicas={"min": 0, "max": 1},
                                    scaling={"pollingIntervalSeconds": 1, "scaleToZero": True},
                                    backpressure={"highWatermark": 20, "lowWatermark": 5}))
    wait_status(kube, namespace, lambda s: s.get("phase") == "Idle", "pipeline Idle at zero")
    key = "tributary:backpressure:docs:live"
    record = wait_for(lambda: json.loads(stream_redis.get(key) or "null"), timeout=30, message="the record")
    assert {k: record[k] for k in ("high", "low", "on", "group", "pipeline", "ttl")} == {
        "high": 20, "low": 5, "on": False, "group": "workers", "pipeline": f"{namespace}/live", "ttl": 10}
    assert 0 < stream_redis.pttl(key) <= 10_000  # 3 polling intervals, at least 10 s

    # A backlog of 25 no worker can clear within claimIdleMs (60 s): read by a consumer that is stuck.
    pipe = stream_redis.pipeline(transaction=True)
    for doc in range(25):
        pipe.xadd("docs:live", {"event": event(doc, 1)})
    pipe.xreadgroup("workers", "stuck", {"docs:live": ">"}, count=25)
    pipe.execute()
    wait_for(lambda: json.loads(stream_redis.get(key))["on"], timeout=30, message="the record turns on")
    assert condition(status(kube, namespace), "Backpressure")["status"] == "True"

    events_file = tmp_path / "events.jsonl"
    events_file.write_text(event(100, 1) + "\n")
    publish = [str(Path(sys.executable).parent / "tributary"), "publish", "--index", "handbook", "--stream",
               "docs:live", "--group", "workers", str(events_file)]
    env = {**os.environ, "TRIBUTARY_REDIS_URL": redis_server.url}
    held = subprocess.run([*publish, "--timeout", "2"], env=env, capture_output=True, text=True, timeout=60)
    assert held.returncode == 1, held.stderr  # its flags are the defaults (10 000 / 5 000): the record wins
    assert f"following StreamPipeline {namespace}/live (high watermark 20, low 5)" in held.stderr
    assert "gave up after" in held.stderr and "high watermark 20" in held.stderr
    assert stream_redis.xlen("docs:live") == 25

    stuck = [e["message_id"] for e in stream_redis.xpending_range("docs:live", "workers", "-", "+", 100,
                                                                  consumername="stuck")]
    stream_redis.xack("docs:live", "workers", *stuck)  # backlog 0: at or below the low watermark
    wait_for(lambda: not json.loads(stream_redis.get(key))["on"], timeout=30, message="the record turns off")
    released = subprocess.run(publish, env=env, capture_output=True, text=True, timeout=60)
    assert released.returncode == 0, released.stderr
    assert stream_redis.xlen("docs:live") == 26

    # A longer polling interval: a longer TTL, written at once (then its expiry cannot pass for the deletion).
    apply(kube, namespace, pipeline(replicas={"min": 0, "max": 1},
                                    scaling={"pollingIntervalSeconds": 10, "scaleToZero": True},
                                    backpressure={"highWatermark": 20, "lowWatermark": 5}))
    wait_for(lambda: json.loads(stream_redis.get(key))["ttl"] == 30, timeout=30, message="the TTL follows the spec")
    started = time.monotonic()
    kube.kubectl("-n", namespace, "delete", "streampipeline", "live")
    wait_for(lambda: not stream_redis.exists(key), timeout=30, interval=0.2,
             message="the deleted pipeline's record is gone: it throttles no one")
    assert time.monotonic() - started < 15, "deleted with the pipeline, not left to expire after 30 s"
