"""The `tributary` CLI as a user runs it: exit codes, JSON output, one-line errors, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness.servers import free_port

TRIBUTARY = str(Path(sys.executable).parent / "tributary")


def cli(*args, env, timeout=300):
    return subprocess.run([TRIBUTARY, *args], env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def bad_corpus(tmp_path) -> Path:
    root = tmp_path / "bad"
    root.mkdir()
    (root / "good-harbours.md").write_text("# Harbours\n\nLighthouses guide ships safely into harbours at night.")
    (root / "good-bees.txt").write_text("Honeybees communicate the direction of flowers with a waggle dance.")
    (root / "empty.txt").write_bytes(b"")
    (root / "garbage.txt").write_bytes(bytes(range(256)) * 64)
    (root / "invalid-utf8.txt").write_bytes("valid start ".encode() + b"\xff\xfe\xfa broken")
    (root / "corrupt.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage without xref")
    with (root / "huge.txt").open("wb") as out:
        line = b"This line repeats to make a fifty megabyte text document.\n"
        out.write(line * (50 * 1024 * 1024 // len(line) + 1))
    (root / "records.jsonl").write_text(
        json.dumps({"id": "rec-1", "text": "Glaciers carve valleys over thousands of years."}) + "\n"
        + "{not json\n"
    )
    return root


def test_bad_input_fails_per_document_and_loses_nothing_else(bad_corpus, tmp_path, milvus_server, worker_env):
    result = cli("--milvus", milvus_server.uri, "ingest", str(bad_corpus), "--index", "bad_input", "--json",
                 env=worker_env)
    assert result.returncode == 3, result.stderr[-2000:]
    report = json.loads(result.stdout)
    reasons = {f["doc_id"]: f["reason"] for f in report["failures"]}
    assert report["documents_succeeded"] == 3  # two files and the good JSONL record
    assert report["documents_failed"] == len(reasons) == 6
    assert reasons["empty.txt"] == "empty document"
    assert "binary" in reasons["garbage.txt"]
    assert "invalid UTF-8" in reasons["invalid-utf8.txt"]
    assert "PDF" in reasons["corrupt.pdf"]
    assert "over the" in reasons["huge.txt"] and "limit" in reasons["huge.txt"]
    assert any("JSON" in reason for doc_id, reason in reasons.items() if doc_id.startswith("records.jsonl"))
    assert report["documents_total"] == 9
    for key in ("documents_total", "documents_succeeded", "documents_failed", "documents_unchanged",
                "chunks_written", "failures"):
        assert key in report

    hits = cli("--milvus", milvus_server.uri, "query", "how do bees tell each other where flowers are",
               "--index", "bad_input", "--json", "-k", "3", env=worker_env)
    assert hits.returncode == 0, hits.stderr
    hits = json.loads(hits.stdout)
    assert hits[0]["doc_id"] == "good-bees.txt"
    assert set(hits[0]) == {"doc_id", "chunk_index", "score", "text"}
    assert {h["doc_id"] for h in hits} == {"good-bees.txt", "good-harbours.md", "rec-1"}


def test_embedded_default_ingest_and_query(tmp_path, worker_env):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "tides.md").write_text("Spring tides happen when the sun and moon align.")
    home = tmp_path / "home"
    result = cli("--home", str(home), "ingest", str(corpus), "--index", "local", "--json", env=worker_env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["documents_succeeded"] == 1
    assert (home / "milvus.db").exists() and (home / "ledger.sqlite").exists()
    hits = json.loads(cli("--home", str(home), "query", "moon and sun", "--index", "local", "--json",
                          env=worker_env).stdout)
    assert hits[0]["doc_id"] == "tides.md"


def test_missing_source_is_one_line(tmp_path, worker_env):
    assert_one_line_error(cli("ingest", str(tmp_path / "nope"), "--index", "x", env=worker_env),
                          "source path does not exist")


def test_unreachable_milvus_is_one_line(tmp_path, worker_env):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("hello")
    port = free_port()  # nothing listens there
    result = cli("--milvus", f"http://127.0.0.1:{port}", "ingest", str(corpus), "--index", "x", env=worker_env)
    assert_one_line_error(result, "cannot connect to Milvus", str(port))


def test_bad_options_are_one_line(worker_env):
    assert_one_line_error(cli("ingest", "x", "--index", "9bad", env=worker_env), "invalid index name")
    assert_one_line_error(cli("ingest", "x", "--index", "ok", "--max-concurrency", "0", env=worker_env),
                          "must be at least 1")
    assert_one_line_error(cli("ingest", "x", env=worker_env), "--index")


def test_query_on_a_missing_index_is_one_line(tmp_path, worker_env):
    assert_one_line_error(cli("--home", str(tmp_path), "query", "hi", "--index", "absent", env=worker_env),
                          "does not exist")
