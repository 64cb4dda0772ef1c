"""`tributary drift` and `tributary ingest --prune` as a user runs them, against a real milvus-lite
server: a hand-planted orphan row and a row of a foreign model are found, and --fix repairs what
it may."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.corpus import make_corpus, write_doc
from tributary_workers.pipeline.writer import open_client

TRIBUTARY = str(Path(sys.executable).parent / "tributary")


def cli(*args, env, timeout=300):
    return subprocess.run([TRIBUTARY, *args], env=env, capture_output=True, text=True, timeout=timeout)


def plant(uri, collection, doc_id, model_id):
    client = open_client(uri)
    client.upsert(collection, [{"pk": f"planted-{doc_id}", "doc_id": doc_id, "chunk_index": 0, "version": 5,
                                "content_hash": "x", "text": "planted by hand", "metadata": {},
                                "model_id": model_id, "vector": [0.1] * 384}])
    client.close()


def test_drift_finds_each_kind_and_fix_repairs_orphans_and_stale(tmp_path, milvus_server, collection_name,
                                                                  worker_env):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, 5, paragraphs=2)
    base = ("--home", str(tmp_path / "home"), "--milvus", milvus_server.uri)
    assert cli(*base, "ingest", str(corpus), "--index", collection_name, env=worker_env).returncode == 0
    clean = cli(*base, "drift", str(corpus), "--index", collection_name, "--json", env=worker_env)
    assert clean.returncode == 0 and json.loads(clean.stdout)["clean"] is True, clean.stderr[-2000:]

    plant(milvus_server.uri, collection_name, "orphan.md", "sentence-transformers/all-MiniLM-L6-v2")
    plant(milvus_server.uri, collection_name, "doc-0003.txt", "intfloat/e5-small-v2")  # a foreign model's row
    (corpus / "doc-0001.txt").unlink()
    write_doc(corpus, "doc-0002.txt", 42, paragraphs=2, version_ns=4_000_000_000_000_000_000)

    found = cli(*base, "drift", str(corpus), "--index", collection_name, "--json", env=worker_env)
    assert found.returncode == 3, found.stderr[-2000:]
    report = json.loads(found.stdout)
    assert {kind: report[kind]["doc_ids"] for kind in ("gone", "stale", "foreign", "orphans")} == {
        "gone": ["doc-0001.txt"], "stale": ["doc-0002.txt"], "foreign": ["doc-0003.txt"], "orphans": ["orphan.md"]}

    fixed = cli(*base, "drift", str(corpus), "--index", collection_name, "--fix", env=worker_env)
    assert fixed.returncode == 3 and "fixed: 1 orphans removed, 1 stale documents re-indexed" in fixed.stdout
    after = json.loads(cli(*base, "drift", str(corpus), "--index", collection_name, "--json", env=worker_env).stdout)
    assert (after["orphans"]["count"], after["stale"]["count"]) == (0, 0)
    assert (after["gone"]["doc_ids"], after["foreign"]["doc_ids"]) == (["doc-0001.txt"], ["doc-0003.txt"])

    pruned = cli(*base, "ingest", str(corpus), "--index", collection_name, "--prune", "--json", env=worker_env)
    assert pruned.returncode == 0 and json.loads(pruned.stdout)["documents_pruned"] == 1
    final = json.loads(cli(*base, "drift", str(corpus), "--index", collection_name, "--json", env=worker_env).stdout)
    assert final["gone"]["count"] == 0 and final["foreign"]["doc_ids"] == ["doc-0003.txt"]
