"""Blue-green re-embedding of an EmbeddingIndex end to end: the real control plane, the operator, the
process kubelet running the step Jobs (`tributary-index-admin backfill|catchup|validate|swap`) and the
stream workers, a real redis-server (queue and ledgers) and a real milvus-lite server.

- 200 documents that only ever arrived through the stream are re-chunked (chunking.maxTokens
  changed) from their stored parsed text, edits and deletes published during the re-embedding land
  in both collections, the alias moves to the candidate, every live document is there once at its
  newest version and every chunk respects the new maxTokens;
- a model change (a second model, derived locally) survives the operator killed in each phase;
- reverting the spec swaps the alias straight back, without a backfill, and loses no update;
- a validation gate that fails leaves the active collection serving and says why (and a drift check
  of the active collection shows in status.drift).
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict

import pytest
import redis
import yaml
from harness.indexes import embedding_index, get_index, wait_index_phase
from harness.models import DERIVED_DIMENSION, collapsed_model, derived_model
from harness.waiting import wait_for
from tributary_workers.pipeline.writer import open_client

DOCS = 40
MANY = 200  # the issue's figure, for the re-chunking test


def apply(kube, namespace, manifest: dict) -> None:
    kube.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(manifest))


def patch_index(kube, namespace, spec: dict) -> None:
    kube.kubectl("-n", namespace, "patch", "ei", "handbook", "--type=merge", "-p", json.dumps({"spec": spec}))


def get_json(kube, namespace, *args) -> dict:
    return json.loads(kube.kubectl("-n", namespace, "get", *args, "-o", "json").stdout)


def condition(obj: dict, kind: str) -> dict:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def event(doc: int, version: int, op: str = "upsert") -> dict:
    body = {"op": op, "doc_id": f"doc-{doc:03d}.md", "version": version}
    if op == "upsert":
        topic = ["rivers", "glaciers", "deserts", "forests", "oceans", "volcanoes", "tundra", "canyons"][doc % 8]
        body["content"] = (f"# Field note {doc}\n\nRevision {version} of note {doc}: observations about "
                           f"{topic} number {doc}, written for the blue-green test. The survey team walked "
                           f"the {topic} for {doc % 7 + 2} days, measured what changed since the last "
                           f"season, and wrote down where the {topic} met the road, the river and the town.")
    return {"event": json.dumps(body)}


def rows_of(uri: str, name: str, *fields: str) -> list[dict]:
    client = open_client(uri)
    try:
        return client.query(name, filter="", output_fields=["doc_id", "version", "chunk_index", *fields],
                            limit=16384)
    finally:
        client.close()


def versions(rows: list[dict]) -> dict[str, set[int]]:
    found: dict[str, set[int]] = defaultdict(set)
    for row in rows:
        found[row["doc_id"]].add(int(row["version"]))
    return dict(found)


def alias_target(uri: str, alias: str) -> str:
    client = open_client(uri)
    try:
        return client.describe_alias(alias)["collection_name"]
    finally:
        client.close()


def vector_dimension(uri: str, collection: str) -> int:
    client = open_client(uri)
    try:
        fields = client.describe_collection(collection)["fields"]
    finally:
        client.close()
    return int(next(f for f in fields if f["name"] == "vector")["params"]["dim"])


@pytest.fixture(scope="session")
def second_model(tmp_path_factory):
    return derived_model(tmp_path_factory.mktemp("models") / "minilm-256")


@pytest.fixture
def streamed_index(kube, namespace, operator, local_node, milvus_server, redis_server, request):
    """An index whose documents all arrived through a StreamPipeline (nothing else could re-embed them);
    DOCS of them, or as many as the test's indirect parameter says."""
    docs = getattr(request, "param", DOCS)
    kube.kubectl("-n", namespace, "create", "secret", "generic", "redis", f"--from-literal=url={redis_server.url}")
    alias = f"bluegreen_{namespace.replace('-', '_')[-12:]}"
    index = embedding_index("handbook", alias, milvus_server.uri, ledger={"redisSecretRef": {"name": "redis"}},
                            validation={"sampleSize": 20}, reembedding={"parallelism": 2})
    apply(kube, namespace, index)
    ei = wait_index_phase(kube, namespace, "handbook", {"Ready", "Failed"})
    assert ei["status"]["phase"] == "Ready", ei["status"]
    apply(kube, namespace, {
        "apiVersion": "tributary.dev/v1alpha1", "kind": "StreamPipeline", "metadata": {"name": "live"},
        "spec": {"indexRef": {"name": "handbook"}, "replicas": {"min": 1, "max": 1},
                 "queue": {"redisSecretRef": {"name": "redis"}, "stream": f"docs:{namespace}", "group": "workers"}}})
    conn = redis.Redis.from_url(redis_server.url, decode_responses=True)
    for doc in range(docs):
        conn.xadd(f"docs:{namespace}", event(doc, 1))
    wait_for(lambda: len(versions(rows_of(milvus_server.uri, alias))) == docs, timeout=300, interval=1,
             message=f"{docs} streamed documents in the active collection")
    yield alias, ei["status"]["activeCollection"], conn
    conn.close()


def routing(kube, namespace) -> dict:
    return get_json(kube, namespace, "streampipeline", "live").get("status", {}).get("routing") or {}


@pytest.mark.parametrize("streamed_index", [MANY], indirect=True)
def test_rechunking_dual_writes_swaps_and_rolls_back(kube, namespace, streamed_index, milvus_server):
    from tributary_workers.pipeline.embedder import Embedder, EmbedderConfig

    alias, original, conn = streamed_index
    stream = f"docs:{namespace}"
    patch_index(kube, namespace, {"chunking": {"maxTokens": 32, "overlapTokens": 4}})

    # Dual writes first: the pipeline's workers write to the candidate before the backfill starts.
    ei = wait_for(lambda: (o := get_index(kube, namespace, "handbook"))["status"].get("candidateCollection") and o,
                  timeout=30, message="candidate named")
    candidate = ei["status"]["candidateCollection"]
    assert candidate != original and alias_target(milvus_server.uri, alias) == original
    wait_for(lambda: (r := routing(kube, namespace)).get("applied") and candidate in r.get("targets", []),
             timeout=60, message="every worker applied the routing record with the candidate")
    # While the re-embedding runs: 20 edits and 10 deletes through the stream.
    for doc in range(20):
        conn.xadd(stream, event(doc, 2))
    for doc in range(20, 30):
        conn.xadd(stream, event(doc, 2, op="delete"))

    phases = []

    def swapped():
        o = get_index(kube, namespace, "handbook")
        phase = o["status"].get("phase")
        if not phases or phases[-1] != phase:
            phases.append(phase)
        moved = phase == "Ready" and o["status"].get("activeCollection") != original
        return (moved or phase == "Failed") and o

    ei = wait_for(swapped, timeout=600, interval=0.5, message="the alias swapped to the candidate")
    st = ei["status"]
    assert st["phase"] == "Ready", (phases, st)
    print(f"phases: {' -> '.join(p or '-' for p in phases)}")
    assert {"Backfilling", "CatchingUp", "Validating"} <= set(phases) or "Swapping" in phases, phases
    assert (st["activeCollection"], st["previousCollection"]) == (candidate, original)
    assert alias_target(milvus_server.uri, alias) == candidate
    assert condition(ei, "Validated")["status"] == "True" and condition(ei, "SelfRetrieval")["status"] == "True"
    assert condition(ei, "Ready")["status"] == "True"

    wanted = {f"doc-{d:03d}.md": ({2} if d < 20 else {1}) for d in range(MANY) if not 20 <= d < 30}
    wait_for(lambda: versions(rows_of(milvus_server.uri, alias)) == wanted, timeout=60,
             message="every live document at its newest version through the alias")
    rows = rows_of(milvus_server.uri, alias, "text")
    assert not [k for k, n in Counter((r["doc_id"], r["chunk_index"]) for r in rows).items() if n > 1]  # once
    embedder = Embedder(EmbedderConfig())
    embedder.warm_up()
    longest = max(len(embedder.tokenizer(r["text"], add_special_tokens=False)["input_ids"]) for r in rows)
    before = rows_of(milvus_server.uri, original, "text")
    assert longest <= 32 and len(rows) > len(before) * 0.9, (longest, len(rows), len(before))  # re-chunked

    # After the swap the previous collection keeps receiving updates, so a rollback loses none.
    wait_for(lambda: (r := routing(kube, namespace)).get("targets") == [candidate, original] and r.get("applied"),
             timeout=60, message="the previous collection kept as a second target")
    conn.xadd(stream, event(0, 3))
    wait_for(lambda: versions(rows_of(milvus_server.uri, original)).get("doc-000.md") == {3} and
             versions(rows_of(milvus_server.uri, candidate)).get("doc-000.md") == {3},
             timeout=60, message="an edit after the swap lands in both collections")

    # GitOps rollback: the spec reverted, the alias goes straight back, no backfill Job.
    seen_jobs: set[str] = set()

    def rolled_back():
        seen_jobs.update(j["metadata"]["name"] for j in get_json(kube, namespace, "jobs")["items"])
        return alias_target(milvus_server.uri, alias) == original

    reverted = time.monotonic()
    patch_index(kube, namespace, {"chunking": {"maxTokens": 64, "overlapTokens": 8}})
    wait_for(rolled_back, timeout=30, interval=0.2, message="the alias back on the previous collection")
    took = time.monotonic() - reverted
    print(f"rollback: alias back on {original} {took:.1f}s after the spec was reverted")
    assert took <= 10, took
    assert not [j for j in seen_jobs if "-backfill-" in j], seen_jobs
    ei = wait_index_phase(kube, namespace, "handbook", {"Ready"}, timeout=30)
    assert (ei["status"]["activeCollection"], ei["status"]["previousCollection"]) == (original, candidate)
    assert condition(ei, "Ready")["reason"] == "RolledBack"
    assert versions(rows_of(milvus_server.uri, alias))["doc-000.md"] == {3}


def test_a_failed_gate_keeps_the_active_collection_serving(kube, namespace, streamed_index, milvus_server,
                                                           tmp_path_factory):
    alias, original, _ = streamed_index
    # spec.drift: the first check runs at once and shows what it counted (issue: sync semantics)
    patch_index(kube, namespace, {"drift": {"intervalSeconds": 60}})
    ei = wait_for(lambda: ((o := get_index(kube, namespace, "handbook"))["status"].get("drift") or {}).get(
        "documents") is not None and o, timeout=90, message="a drift check of the active collection")
    assert ei["status"]["drift"] == {**ei["status"]["drift"], "collection": original, "documents": DOCS,
                                     "orphans": 0, "foreign": 0}
    assert condition(ei, "Drifted")["status"] == "False"
    broken = collapsed_model(tmp_path_factory.mktemp("models") / "collapsed-256")
    patch_index(kube, namespace, {"model": {"name": str(broken), "dimension": DERIVED_DIMENSION},
                                  "validation": {"sampleSize": 20, "topK": 1}})
    ei = wait_index_phase(kube, namespace, "handbook", {"Failed"}, timeout=420)
    gate = condition(ei, "SelfRetrieval")
    assert gate["status"] == "False" and gate["reason"], gate
    progressing = condition(ei, "Progressing")
    assert progressing["reason"] == "ValidationFailed" and original in progressing["message"]
    assert condition(ei, "Ready")["status"] == "True"  # still serving
    assert ei["status"]["activeCollection"] == original and alias_target(milvus_server.uri, alias) == original
    candidate = ei["status"]["candidateCollection"]
    client = open_client(milvus_server.uri)
    try:
        assert client.has_collection(candidate)  # kept for inspection
    finally:
        client.close()


def test_a_model_change_survives_the_operator_killed_in_each_phase(kube, namespace, streamed_index, milvus_server,
                                                                   second_model, operator, tmp_path):
    from harness.operator import launch
    from tributary_workers.localservers import stop
    from tributary_workers.pipeline.embedder import resolve_model

    alias, original, _ = streamed_index
    patch_index(kube, namespace, {"model": {"name": str(second_model), "dimension": DERIVED_DIMENSION}})
    running, killed, jobs_seen = operator, [], set()
    try:
        def step():
            nonlocal running
            o = get_index(kube, namespace, "handbook")
            jobs_seen.update(j["metadata"]["name"] for j in get_json(kube, namespace, "jobs")["items"])
            phase = o["status"].get("phase")
            if phase in ("Backfilling", "CatchingUp", "Swapping") and phase not in killed:
                running.proc.kill()  # SIGKILL: no handler finishes, nothing is cleaned up
                running.proc.wait(timeout=10)
                killed.append(phase)
                running = launch(kube.kubeconfig, namespace, tmp_path / f"operator-{len(killed)}.log")
            done = phase == "Ready" and o["status"].get("activeCollection") != original
            return (done or phase == "Failed") and o

        ei = wait_for(step, timeout=480, interval=0.3, message="the re-embedding finished across operator restarts")
        print(f"operator killed in: {', '.join(killed)}")
        # What the candidate records: a local model's id carries a digest the operator cannot compute.
        assert ei["status"].get("activeModel") == resolve_model(str(second_model))[1], ei["status"]
        assert ei["status"]["activeModel"].startswith("minilm-256@")
        after_restarts(kube, namespace, ei, killed, jobs_seen, alias, original, milvus_server.uri)
    finally:
        if running is not operator:
            stop(running.proc)


def after_restarts(kube, namespace, ei, killed, jobs_seen, alias, original, milvus_server_uri) -> None:
    """The end state after the restarts: one candidate, one Job per step, then retention retires."""
    import re

    assert ei["status"]["phase"] == "Ready", ei["status"]
    assert {"Backfilling", "CatchingUp"} <= set(killed), killed
    candidate = ei["status"]["activeCollection"]
    assert alias_target(milvus_server_uri, alias) == candidate and ei["status"]["previousCollection"] == original
    client = open_client(milvus_server_uri)
    try:
        made = {c for c in client.list_collections() if re.fullmatch(rf"{alias}_[0-9a-f]{{8}}", c)}
    finally:
        client.close()
    assert made == {original, candidate}  # no second candidate
    for kind in ("backfill", "catchup", "validate", "swap"):  # one Job per step, never a second
        assert len([j for j in jobs_seen if f"-{kind}-" in j]) <= 1, sorted(jobs_seen)
    assert versions(rows_of(milvus_server_uri, alias)) == {f"doc-{d:03d}.md": {1} for d in range(DOCS)}
    assert vector_dimension(milvus_server_uri, candidate) == DERIVED_DIMENSION

    # Retention: not kept any more, so the pipelines stop writing to it, then it is dropped.
    patch_index(kube, namespace, {"retention": {"keepPrevious": False}})
    ei = wait_for(lambda: not (o := get_index(kube, namespace, "handbook"))["status"].get("previousCollection") and o,
                  timeout=120, message="the previous collection retired")
    assert condition(ei, "Progressing")["reason"] == "Retired"
    assert routing(kube, namespace)["targets"] == [candidate]
    client = open_client(milvus_server_uri)
    try:
        assert not client.has_collection(original) and client.has_collection(candidate)
    finally:
        client.close()
    assert alias_target(milvus_server_uri, alias) == candidate
