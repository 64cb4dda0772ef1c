"""`tributary-index-admin provision` against a real milvus-lite server: the first collection and its
alias, idempotent re-runs, brownfield adoption, refusals that repoint nothing, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.servers import free_port
from tributary_workers.pipeline.writer import MilvusWriter, WriterConfig, open_client

ADMIN = str(Path(sys.executable).parent / "tributary-index-admin")
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def provision(uri, alias, collection, env, *extra, report=None):
    args = [ADMIN, "provision", "--milvus-uri", uri, "--alias", alias, "--collection", collection,
            "--dimension", "384", "--index-type", "HNSW", "--index-params", '{"M": 8, "efConstruction": 64}',
            *extra]
    if report is not None:
        args += ["--report-file", str(report)]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def alias_target(uri, alias) -> str:
    client = open_client(uri)
    try:
        return client.describe_alias(alias)["collection_name"]
    finally:
        client.close()


def make_collection(uri, name, model_id, dimension=384) -> None:
    writer = MilvusWriter(WriterConfig(uri=uri, collection=name, model_id=model_id, dimension=dimension))
    writer.warm_up()
    writer.close()


def test_provision_creates_collection_and_alias_then_is_idempotent(milvus_server, collection_name, worker_env,
                                                                    tmp_path):
    alias, report = f"a_{collection_name}", tmp_path / "termination-log"
    first = provision(milvus_server.uri, alias, collection_name, worker_env, report=report)
    assert first.returncode == 0, first.stderr
    outcome = json.loads(first.stdout)
    assert (outcome["action"], outcome["reason"], outcome["collection"]) == ("Create", "Provisioned", collection_name)
    assert json.loads(report.read_text()) == outcome  # the operator reads the termination message
    assert alias_target(milvus_server.uri, alias) == collection_name
    client = open_client(milvus_server.uri)
    try:
        props = client.describe_collection(collection_name)["properties"]
        index = client.describe_index(collection_name, "vector")
        state = str(client.get_load_state(collection_name)["state"])
    finally:
        client.close()
    assert props["tributary.model_id"] == MODEL and props["tributary.dimension"] == "384"
    assert index["index_type"] == "HNSW" and index["metric_type"] == "COSINE"
    assert state.endswith("Loaded")

    again = provision(milvus_server.uri, alias, collection_name, worker_env)
    assert again.returncode == 0, again.stderr
    assert (json.loads(again.stdout)["action"], json.loads(again.stdout)["reason"]) == ("Adopt", "Provisioned")
    assert alias_target(milvus_server.uri, alias) == collection_name


def test_existing_alias_is_adopted_or_refused_never_repointed(milvus_server, collection_name, worker_env):
    legacy, foreign = f"{collection_name}_legacy", f"{collection_name}_foreign"
    make_collection(milvus_server.uri, legacy, MODEL)
    make_collection(milvus_server.uri, foreign, "e5-small")
    client = open_client(milvus_server.uri)
    try:
        client.create_alias(legacy, f"ok_{collection_name}")
        client.create_alias(foreign, f"no_{collection_name}")
    finally:
        client.close()

    adopted = provision(milvus_server.uri, f"ok_{collection_name}", collection_name, worker_env)
    assert adopted.returncode == 0, adopted.stderr
    outcome = json.loads(adopted.stdout)
    assert (outcome["action"], outcome["reason"], outcome["collection"]) == ("Adopt", "Adopted", legacy)

    refused = provision(milvus_server.uri, f"no_{collection_name}", collection_name, worker_env)
    assert refused.returncode == 2, refused.stderr
    outcome = json.loads(refused.stdout)
    assert (outcome["action"], outcome["reason"]) == ("Conflict", "ModelMismatch")
    assert "e5-small" in outcome["message"] and MODEL in outcome["message"]
    assert alias_target(milvus_server.uri, f"no_{collection_name}") == foreign  # never repointed
    check = open_client(milvus_server.uri)
    try:
        assert not check.has_collection(collection_name)  # nothing created for a refusal
    finally:
        check.close()


def test_unreachable_milvus_is_one_line_and_retryable(collection_name, worker_env):
    env = dict(worker_env, TRIBUTARY_MILVUS_TOKEN="root:s3cr3t-token")
    result = provision(f"http://127.0.0.1:{free_port()}", "a_x", collection_name, env)
    assert result.returncode == 1, result  # 1: retried by the Job; 2 would fail it at once
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tributary-index-admin: error:"), result.stderr
    assert "Milvus" in lines[0] and "s3cr3t" not in result.stderr + result.stdout
