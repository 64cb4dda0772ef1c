"""`tributary calibrate`, `cost` and `plan` as a user runs them: real servers, real model, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from harness.corpus import write_doc

TRIBUTARY = str(Path(sys.executable).parent / "tributary")


def cli(*args, env, timeout=300):
    return subprocess.run([TRIBUTARY, *args], env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 1, (result.returncode, result.stdout[-500:], result.stderr[-1000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_calibrate_on_a_tiny_sample_writes_a_usable_file(tmp_path, worker_env):
    out = tmp_path / "calibration.json"
    result = cli("calibrate", "-o", str(out), "--sample-chunks", "4", "--milvus-chunks", "16", "--redis-events", "20",
                 "--idle-seconds", "0.5", "--batch-sizes", "1,2", "--embed-batch-size", "4", "--label", "test run",
                 env=worker_env, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    calibration = json.loads(out.read_text())
    assert calibration["label"] == "test run" and calibration["measured_at"]
    assert calibration["machine"]["cpus"] == os.cpu_count() and calibration["versions"]["torch"]
    rates = calibration["embedding"]["cpu"]["chunks_per_s"]
    assert set(rates) == {"1", "2", "4"} and all(rate > 0 for rate in rates.values())
    milvus = calibration["milvus"]
    assert milvus["measured"] == "server CPU"
    for key in ("stream_upsert_wall_s_per_chunk", "batch_upsert_wall_s_per_chunk", "bulk_insert_wall_s_per_chunk",
                "index_build_wall_s_per_chunk"):
        assert milvus[key] > 0, key
    assert calibration["worker"]["start_s"] > 0 and calibration["worker"]["idle_rss_gb"] > 0.1

    costed = cli("cost", "--calibration", str(out), "--json", env=worker_env)
    assert costed.returncode == 0, costed.stderr
    report = json.loads(costed.stdout)
    assert report["inputs"]["worker_start_s"]["value"] == calibration["worker"]["start_s"]
    assert report["inputs"]["worker_start_s"]["source"].startswith(f"calibration: {out}")


def test_cost_compares_both_strategies_and_plots(tmp_path, worker_env):
    result = cli("cost", "--json", "--plot", str(tmp_path / "cost.png"), env=worker_env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    pure, hybrid = report["pure_streaming"], report["hybrid"]
    for strategy in (pure, hybrid):
        assert strategy["total_per_day"] == pytest.approx(sum(t["per_day"] for t in strategy["terms"]), abs=1e-5)
        assert all(t["uses"] for t in strategy["terms"])
    assert report["difference"]["per_day"] == pytest.approx(hybrid["total_per_day"] - pure["total_per_day"], abs=1e-5)
    assert report["inputs"]["docs_per_day"] == {"value": 10000.0, "unit": "documents/day",
                                                "source": "default: --docs-per-day"}
    assert report["calibration"]["source"].startswith("calibration: shipped reference")
    assert (tmp_path / "cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    own = cli("cost", "--strategy", "half=0.5", "--strategy", "nightly=1", "--bulk-fraction", "0.5",
              "--core-hour", "0.1", "--plot", str(tmp_path / "cost.svg"), "--json", env=worker_env)
    assert own.returncode == 0, own.stderr
    report = json.loads(own.stdout)
    assert set(report) >= {"half", "nightly", "difference"} and report["half"]["batch_share"] == 0.5
    assert report["inputs"]["price_core_hour"]["source"] == "input: --core-hour"
    assert ET.parse(tmp_path / "cost.svg").getroot().tag.endswith("svg")

    table = cli("cost", "--docs-per-day", "500", env=worker_env)
    assert table.returncode == 0 and "total per day" in table.stdout and "hybrid - pure_streaming" in table.stdout


def make_varied_corpus(root: Path, count: int) -> None:
    for i in range(count):
        write_doc(root, f"doc-{i:03d}.txt", i, paragraphs=1 + (i * 7) % 19)


def test_plan_predicts_chunks_and_counts_unchanged_exactly(tmp_path, milvus_server, worker_env):
    corpus, home = tmp_path / "corpus", tmp_path / "home"
    make_varied_corpus(corpus, 40)
    env = {**worker_env, "TRIBUTARY_HOME": str(home)}
    plan = cli("plan", str(corpus), "--index", "planned", "--sample", "5", "--json", env=env)
    assert plan.returncode == 0, plan.stderr[-2000:]
    first = json.loads(plan.stdout)
    assert first["written"] is False and not (home / "ledger.sqlite").exists()  # nothing written
    assert first["plan"]["files"] == first["plan"]["to_write"] == 40 and first["plan"]["unchanged"] == 0
    assert first["plan"]["by_type"]["text/plain"]["files"] == 40

    ingest = cli("--milvus", milvus_server.uri, "ingest", str(corpus), "--index", "planned", "--json", env=env)
    assert ingest.returncode == 0, ingest.stderr[-2000:]
    actual = json.loads(ingest.stdout)["chunks_written"]
    assert abs(first["plan"]["chunks_to_write"] - actual) <= 0.10 * actual, (first["plan"]["chunks_to_write"], actual)

    for i in (3, 17, 29):  # three edits; the other 37 are unchanged
        write_doc(corpus, f"doc-{i:03d}.txt", 1000 + i, paragraphs=4)  # a newer mtime: a newer version
    again = json.loads(cli("plan", str(corpus), "--index", "planned", "--json", env=env).stdout)["plan"]
    assert (again["unchanged"], again["to_write"], again["superseded"]) == (37, 3, 0)
    assert again["ledger"] == str(home / "ledger.sqlite")


def test_plan_reads_an_ingestionjob_manifest(tmp_path, worker_env):
    corpus = tmp_path / "corpus"
    make_varied_corpus(corpus, 6)
    manifest = tmp_path / "ij.yaml"
    manifest.write_text(f"""apiVersion: tributary.dev/v1alpha1
kind: IngestionJob
metadata: {{name: nightly}}
spec:
  source: {{type: local, uri: {corpus}, include: ["doc-00[0-3].txt"]}}
  target: {{indexRef: {{name: handbook}}}}
  parallelism: 2
  mode: initialLoad
""")
    result = cli("plan", "-f", str(manifest), "--json", env=worker_env)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["collection"] == "handbook" and report["plan"]["files"] == 4
    assert report["run"]["parallelism"] == 2 and report["run"]["initial_load"] is True
    assert report["run"]["wall_s"] > report["run"]["worker_start_s"]


def test_bad_input_exits_1_with_one_line(tmp_path, worker_env):
    other = tmp_path / "sp.yaml"
    other.write_text("apiVersion: tributary.dev/v1alpha1\nkind: StreamPipeline\nmetadata: {name: x}\nspec: {}\n")
    assert_one_line_error(cli("plan", "-f", str(other), env=worker_env), "StreamPipeline", "not a tributary.dev IngestionJob")
    assert_one_line_error(cli("plan", "-f", str(tmp_path / "missing.yaml"), env=worker_env), "cannot read")
    assert_one_line_error(cli("cost", "--docs-per-day", "-5", env=worker_env), "--docs-per-day", "negative")
    assert_one_line_error(cli("cost", "--bulk-fraction", "1.5", env=worker_env), "between 0 and 1")
    assert_one_line_error(cli("cost", "--core-hours", "0.1", env=worker_env), "unrecognized arguments: --core-hours")
    assert_one_line_error(cli("cost", "--gpu-hour", "x", env=worker_env), "--gpu-hour")
    assert_one_line_error(cli("cost", "--stream-device", "gpu", env=worker_env), "no GPU figures")
    assert_one_line_error(cli("cost", "--plot", str(tmp_path / "x.jpg"), env=worker_env), ".png or .svg")
    assert_one_line_error(cli("plan", "--core-hour", "-1", str(tmp_path), "--index", "x", env=worker_env), "negative")
