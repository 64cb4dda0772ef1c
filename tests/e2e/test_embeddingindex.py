"""EmbeddingIndex provisioning end to end: the real control plane, the operator, the process
kubelet running the provisioning Job, and a real milvus-lite server.

- the first collection and its alias, then an IngestionJob (examples/local) into it;
- a brownfield alias of another model: Failed with what differs, never repointed;
- Milvus unreachable: Ready=False MilvusUnavailable, recovered without a hand once it is up.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from harness.corpus import make_corpus
from harness.indexes import embedding_index, get_index, wait_index_phase
from harness.servers import free_port
from harness.waiting import wait_for
from tributary_workers.localservers import start_milvus
from tributary_workers.pipeline.writer import MilvusWriter, WriterConfig, open_client

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "examples" / "local"


def apply(kube, namespace, manifest: dict) -> None:
    kube.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(manifest))


def condition(obj: dict, kind: str) -> dict:
    return next(c for c in obj["status"].get("conditions", []) if c["type"] == kind)


def alias_target(uri: str, alias: str) -> str:
    client = open_client(uri)
    try:
        return client.describe_alias(alias)["collection_name"]
    finally:
        client.close()


def jobs(kube, namespace) -> list[dict]:
    return json.loads(kube.kubectl("-n", namespace, "get", "jobs", "-o", "json").stdout)["items"]


def test_local_examples_provision_the_index_and_load_it(kube, namespace, operator, local_node, milvus_server,
                                                        tmp_path):
    corpus = tmp_path / "handbook"
    make_corpus(corpus, 8, paragraphs=2)
    index = yaml.safe_load((LOCAL / "embeddingindex.yaml").read_text())
    index["spec"]["milvus"]["uri"] = milvus_server.uri  # the session's server, not port 19530
    load = yaml.safe_load((LOCAL / "ingestionjob.yaml").read_text())
    load["spec"]["source"]["uri"] = str(corpus)
    apply(kube, namespace, load)  # first: it waits for the index, as in a GitOps sync of both
    apply(kube, namespace, index)

    ei = wait_index_phase(kube, namespace, "handbook", {"Ready", "Failed"})
    status = ei["status"]
    assert status["phase"] == "Ready", status
    active = status["activeCollection"]
    assert re.fullmatch(r"handbook_[0-9a-f]{8}", active)
    assert status["activeModel"] == "sentence-transformers/all-MiniLM-L6-v2"
    ready = condition(ei, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Provisioned") and active in ready["message"]
    assert alias_target(milvus_server.uri, "handbook") == active
    client = open_client(milvus_server.uri)
    try:
        described = client.describe_index(active, "vector")
    finally:
        client.close()
    assert (described["index_type"], described["metric_type"]) == ("HNSW", "COSINE")
    wait_for(lambda: not [j for j in jobs(kube, namespace) if "provision" in j["metadata"]["name"]], timeout=30,
             message="the provisioning Job removed once read")
    printed = kube.kubectl("-n", namespace, "get", "ei").stdout
    assert "Ready" in printed and active in printed

    ij = wait_for(lambda: (o := json.loads(kube.kubectl("-n", namespace, "get", "ij", "handbook-load", "-o",
                                                       "json").stdout)).get("status", {}).get("phase")
                  in ("Succeeded", "PartiallySucceeded", "Failed") and o, timeout=240, interval=0.5,
                  message="IngestionJob finished")
    assert ij["status"]["phase"] == "Succeeded", ij["status"]
    client = open_client(milvus_server.uri)
    try:
        rows = client.query("handbook", filter="", output_fields=["doc_id"], limit=1000)  # through the alias
    finally:
        client.close()
    assert {r["doc_id"] for r in rows} == {p.name for p in corpus.iterdir()}

    # A change of the essence keeps serving the active collection and says a re-embedding is due.
    kube.kubectl("-n", namespace, "patch", "ei", "handbook", "--type=merge", "-p",
                 json.dumps({"spec": {"chunking": {"maxTokens": 96, "overlapTokens": 16}}}))
    ei = wait_for(lambda: (o := get_index(kube, namespace, "handbook")) and any(
        c["type"] == "ReembedPending" and c["status"] == "True" for c in o["status"]["conditions"]) and o,
        timeout=30, message="ReembedPending=True")
    assert ei["status"]["activeCollection"] == active and condition(ei, "Ready")["status"] == "True"
    assert alias_target(milvus_server.uri, "handbook") == active


def test_alias_of_another_model_fails_and_is_never_repointed(kube, namespace, operator, local_node, milvus_server,
                                                             collection_name):
    alias = f"legacy_{collection_name}"
    writer = MilvusWriter(WriterConfig(uri=milvus_server.uri, collection=collection_name, model_id="e5-small",
                                       dimension=384))
    writer.warm_up()
    writer.client.create_alias(collection_name, alias)
    writer.close()
    apply(kube, namespace, embedding_index("legacy", alias, milvus_server.uri))

    ei = wait_index_phase(kube, namespace, "legacy", {"Ready", "Failed"})
    ready = condition(ei, "Ready")
    assert ei["status"]["phase"] == "Failed", ei["status"]
    assert (ready["status"], ready["reason"]) == ("False", "ModelMismatch")
    assert "e5-small" in ready["message"] and "never repointed" in ready["message"]
    assert not ei["status"].get("activeCollection")
    assert alias_target(milvus_server.uri, alias) == collection_name
    events = kube.kubectl("-n", namespace, "get", "events", "--field-selector", "involvedObject.name=legacy").stdout
    assert "ModelMismatch" in events


def test_unreachable_milvus_is_reported_then_recovers(kube, namespace, operator, local_node, tmp_path):
    port = free_port()
    kube.kubectl("-n", namespace, "create", "secret", "generic", "milvus-creds",
                 "--from-literal=MILVUS_TOKEN=root:t0ps3cret")
    manifest = embedding_index("late", "late_index", f"http://127.0.0.1:{port}",
                               milvus={"uri": f"http://127.0.0.1:{port}",
                                       "credentialsSecretRef": {"name": "milvus-creds"}})
    apply(kube, namespace, manifest)
    ei = wait_for(lambda: (o := get_index(kube, namespace, "late")).get("status", {}).get("conditions") and
                  condition(o, "Ready")["reason"] == "MilvusUnavailable" and o, timeout=90,
                  message="Ready=False MilvusUnavailable")
    message = condition(ei, "Ready")["message"]
    assert "\n" not in message and str(port) in message and "t0ps3cret" not in json.dumps(ei)
    job = next(j for j in jobs(kube, namespace) if "provision" in j["metadata"]["name"])
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRIBUTARY_MILVUS_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "milvus-creds", "key": "MILVUS_TOKEN", "optional": False}

    server = start_milvus(tmp_path / "late-milvus", port=port)  # Milvus comes up: no hand needed
    try:
        ei = wait_index_phase(kube, namespace, "late", {"Ready"}, timeout=120)
        assert alias_target(server.uri, "late_index") == ei["status"]["activeCollection"]
        events = kube.kubectl("-n", namespace, "get", "events", "--field-selector",
                              "involvedObject.name=late").stdout
        assert "MilvusUnavailable" in events and "t0ps3cret" not in events
    finally:
        server.stop()
