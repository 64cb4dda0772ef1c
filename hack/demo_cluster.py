"""`make demo-cluster`: a blue-green re-embedding on a local Kubernetes, watched with kubectl.

Brings up the local control plane with the process kubelet (tests/testenv: Pods run as local
processes), a redis-server and a milvus-lite server, and the operator watching one namespace;
applies an EmbeddingIndex (Redis ledger) and a StreamPipeline, streams a few documents, then
changes the index's model to a derived 256-dim one (built locally from the bundled model) and
prints `kubectl get tributary` every few seconds while the phases go Backfilling -> CatchingUp ->
Validating -> Swapping -> Ready. Everything is torn down at the end, on an error and on Ctrl-C.

Test infrastructure, not a product: run with PYTHONPATH=tests:operator:workers (the Makefile does).
Usage: python hack/demo_cluster.py [--docs 20] [--every 3] [--keep-logs DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import redis  # noqa: E402
import yaml  # noqa: E402
from harness.cluster import namespace_manifests  # noqa: E402
from harness.indexes import embedding_index  # noqa: E402
from harness.models import DERIVED_DIMENSION, derived_model  # noqa: E402
from harness.operator import create_worker_account, launch  # noqa: E402
from harness.waiting import wait_for  # noqa: E402
from testenv.control_plane import LocalControlPlane, resolve_assets  # noqa: E402
from testenv.kubelet import NODE_NAME, SERVE_LABEL  # noqa: E402
from tributary_workers.localservers import start_milvus, start_redis, stop  # noqa: E402
from tributary_workers.pipeline.writer import open_client  # noqa: E402

NAMESPACE, INDEX, ALIAS = "demo", "handbook", "demo_handbook"
TOPICS = ["rivers", "glaciers", "deserts", "forests", "oceans", "volcanoes", "tundra", "canyons"]


def say(text: str) -> None:
    print(f"\n== {time.strftime('%H:%M:%S')} {text}", flush=True)


def event(doc: int) -> dict:
    body = {"op": "upsert", "doc_id": f"doc-{doc:03d}.md", "version": 1,
            "content": f"# Field note {doc}\n\nObservations about {TOPICS[doc % len(TOPICS)]} number {doc}, "
                       "written for the blue-green demo."}
    return {"event": json.dumps(body)}


def apply(plane, manifest: dict) -> None:
    plane.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=yaml.safe_dump(manifest))


def index_status(plane) -> dict:
    out = plane.kubectl("-n", NAMESPACE, "get", "embeddingindex", INDEX, "-o", "json").stdout
    return json.loads(out).get("status", {})


def live_documents(uri: str) -> int:
    client = open_client(uri)
    try:
        rows = client.query(ALIAS, filter="", output_fields=["doc_id"], limit=16384)
    finally:
        client.close()
    return len({r["doc_id"] for r in rows})


def schedulable(plane) -> bool:
    node = json.loads(plane.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
    return ready and not node["spec"].get("taints")


def watch(plane, every: float, until, timeout: float) -> dict:
    """Print `kubectl get tributary` every `every` seconds (and each phase change) until until(status)."""
    deadline, last_print, phases = time.monotonic() + timeout, 0.0, []
    while True:
        status = index_status(plane)
        phase = status.get("phase")
        changed = not phases or phases[-1] != phase
        if changed:
            phases.append(phase)
        if changed or time.monotonic() - last_print >= every:
            table = plane.kubectl("-n", NAMESPACE, "get", "tributary").stdout.rstrip()
            print(f"-- {time.strftime('%H:%M:%S')} kubectl get tributary (phases so far: "
                  f"{' -> '.join(p or '-' for p in phases)})\n{table}", flush=True)
            last_print = time.monotonic()
        if until(status):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"no outcome after {timeout:.0f}s; phases: {phases}")
        time.sleep(0.5)


def demo(args, work: Path) -> int:
    say("starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, process kubelet)")
    plane = LocalControlPlane(work / "cluster", resolve_assets(build=False), with_kubelet=True)
    servers, operator = [], None
    try:
        plane.start()
        plane.apply_crds()
        wait_for(lambda: schedulable(plane), timeout=60, message=f"Node {NODE_NAME} Ready and untainted")
        say("starting redis-server and milvus-lite server")
        redis_server = start_redis(work / "redis")
        servers.append(redis_server)
        milvus_server = start_milvus(work / "milvus")
        servers.append(milvus_server)
        say(f"building the derived model ({DERIVED_DIMENSION} dimensions) from the bundled all-MiniLM-L6-v2")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        model = derived_model(work / "models" / "minilm-256")

        plane.kubectl("apply", "-f", "-", input=namespace_manifests(NAMESPACE))
        plane.kubectl("label", "namespace", NAMESPACE, f"{SERVE_LABEL}=run")  # the process kubelet runs its Pods
        wait_for(lambda: plane.kubectl("get", "serviceaccount", "default", "-n", NAMESPACE,
                                       check=False).returncode == 0, timeout=30, message="ServiceAccount default")
        create_worker_account(plane, NAMESPACE)
        plane.kubectl("-n", NAMESPACE, "create", "secret", "generic", "redis",
                      f"--from-literal=url={redis_server.url}")
        say(f"starting the operator (log: {work / 'operator.log'})")
        operator = launch(plane.kubeconfig, NAMESPACE, work / "operator.log")

        say(f"applying EmbeddingIndex {INDEX} (alias {ALIAS}, bundled model, Redis ledger)")
        apply(plane, embedding_index(INDEX, ALIAS, milvus_server.uri, ledger={"redisSecretRef": {"name": "redis"}},
                                     validation={"sampleSize": 20}, reembedding={"parallelism": 2}))
        status = watch(plane, args.every, lambda s: s.get("phase") in ("Ready", "Failed"), timeout=180)
        if status.get("phase") != "Ready":
            raise RuntimeError(f"the index did not become Ready: {status}")
        original = status["activeCollection"]

        say(f"applying StreamPipeline live and streaming {args.docs} documents into Redis stream docs:{NAMESPACE}")
        apply(plane, {"apiVersion": "tributary.dev/v1alpha1", "kind": "StreamPipeline", "metadata": {"name": "live"},
                      "spec": {"indexRef": {"name": INDEX}, "replicas": {"min": 1, "max": 1},
                               "queue": {"redisSecretRef": {"name": "redis"}, "stream": f"docs:{NAMESPACE}",
                                         "group": "workers"}}})
        conn = redis.Redis.from_url(redis_server.url, decode_responses=True)
        for doc in range(args.docs):
            conn.xadd(f"docs:{NAMESPACE}", event(doc))
        conn.close()
        wait_for(lambda: live_documents(milvus_server.uri) == args.docs, timeout=240, interval=1,
                 message=f"{args.docs} streamed documents served through alias {ALIAS}")
        print(plane.kubectl("-n", NAMESPACE, "get", "tributary").stdout.rstrip())

        say(f"changing the model to {model.name} ({DERIVED_DIMENSION} dimensions): the blue-green re-embedding")
        plane.kubectl("-n", NAMESPACE, "patch", "ei", INDEX, "--type=merge", "-p", json.dumps(
            {"spec": {"model": {"name": str(model), "dimension": DERIVED_DIMENSION}}}))
        status = watch(plane, args.every, lambda s: s.get("phase") == "Failed" or (
            s.get("phase") == "Ready" and s.get("activeCollection") not in (None, original)), timeout=args.timeout)
        if status.get("phase") != "Ready":
            raise RuntimeError(f"the re-embedding failed: {status}")
        client = open_client(milvus_server.uri)
        try:
            serving = client.describe_alias(ALIAS)["collection_name"]
        finally:
            client.close()
        say(f"done: alias {ALIAS} now serves {serving} (was {original}); previous kept for rollback: "
            f"{status.get('previousCollection')}; {live_documents(milvus_server.uri)} documents through the alias")
        print(plane.kubectl("-n", NAMESPACE, "get", "jobs,pods").stdout.rstrip())
        return 0
    finally:
        say("tearing down")
        if args.keep_logs:
            keep_logs(work, Path(args.keep_logs))
        if operator is not None:
            stop(operator.proc)
        for server in reversed(servers):
            server.stop()
        plane.stop()


def keep_logs(work: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for log in work.rglob("*.log"):
        target = dest / log.relative_to(work)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(log, target)
    print(f"logs copied to {dest}")


def interrupted(signum, frame) -> None:
    """SIGTERM tears down like Ctrl-C: KeyboardInterrupt runs the finally blocks."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20, help="documents streamed before the model change")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between `kubectl get tributary`")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed for the re-embedding")
    parser.add_argument("--keep-logs", default=None, help="copy every log here before tearing down")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    work = Path(tempfile.mkdtemp(prefix="tributary-demo-"))
    try:
        return demo(args, work)
    except KeyboardInterrupt:
        print("interrupted: torn down", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line, after the teardown
        print(f"demo failed: {' '.join(str(exc).split())[:2000]}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
