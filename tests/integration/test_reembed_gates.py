"""`tributary-index-admin validate | swap | retire` against a real milvus-lite server and redis-server:
the gates on an active collection (bundled model) and candidates (a derived 256-dim model), the alias
swap with its expectation, rollback, and retiring a collection with its ledger namespace."""

from __future__ import annotations

import json
import uuid

import pytest
from harness.models import DERIVED_DIMENSION, derived_model
from harness.servers import free_port
from tributary_workers.cli.index_admin import main
from tributary_workers.contract.exits import EXIT_FATAL, EXIT_OK, EXIT_PERMANENT
from tributary_workers.contract.keys import repair_key
from tributary_workers.contract.reembed import GateName, Step, StepReport
from tributary_workers.documents import Document
from tributary_workers.ledger import RedisLedger
from tributary_workers.ledger.connect import redis_client
from tributary_workers.pipeline.chunker import Chunker, ChunkerConfig
from tributary_workers.pipeline.embedder import Embedder, EmbedderConfig
from tributary_workers.pipeline.indexer import DocumentIndexer, Status
from tributary_workers.pipeline.texts import companion_name
from tributary_workers.pipeline.writer import MilvusWriter, WriterConfig, open_client

TOPICS = [
    "Lighthouses guide ships past rocky harbours at night with rotating lamps.",
    "Sourdough bread rises slowly because wild yeast ferments the flour.",
    "Glaciers carve deep U-shaped valleys as they grind over bedrock.",
    "Honeybees communicate the direction of flowers with a waggle dance.",
    "A violin's tone depends on the spruce top and the maple back.",
    "Volcanic eruptions release ash clouds that disrupt air travel.",
    "Chess openings such as the Sicilian defence fight for the centre.",
    "Coral reefs bleach when warm water drives out their symbiotic algae.",
    "Espresso is brewed by forcing hot water through finely ground coffee.",
    "Tidal forces of the moon raise two bulges in the oceans each day.",
    "Origami cranes are folded from a single square of paper without cuts.",
    "Penguins huddle together to survive the Antarctic winter wind.",
    "Compound interest makes savings grow faster the longer they stay invested.",
    "Bonsai trees are kept small by pruning roots and branches carefully.",
    "Solar panels convert sunlight into electricity with silicon cells.",
]
DISJOINT = [
    "The marathon runner crossed the finish line after forty-two kilometres.",
    "Knitting a wool sweater takes many evenings of patient work.",
    "Submarines dive by flooding their ballast tanks with seawater.",
    "Tax returns are due in spring in many countries.",
    "The orchestra tuned to the oboe's A before the concert.",
    "Bicycle gears let riders climb steep hills with less effort.",
    "Printing presses spread books across Europe in the fifteenth century.",
    "Cheese ripens in caves where humidity and temperature stay constant.",
    "Skyscrapers sway slightly in strong wind by design.",
    "Railway signals keep trains apart on a single track.",
    "Hot air balloons rise because warm air is lighter than cold air.",
    "Librarians catalogue books with the Dewey decimal system.",
    "A goalkeeper may handle the ball only inside the penalty area.",
    "Typewriters used inked ribbons struck by metal letters.",
    "Snowflakes form six-sided crystals around specks of dust.",
]
QUERIES = ["How do bees tell each other where flowers are?", "What makes bread rise?",
           "Why do corals lose their colour?"]


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def build(uri: str, redis_url: str, name: str, texts, model: str | None, bulk_load: bool = False,
          prefix: str = "doc") -> str:
    """A collection of one-chunk documents {prefix}-NN written by the indexer, with its Redis ledger."""
    embedder = Embedder(EmbedderConfig(model=model))
    embedder.warm_up()
    writer = MilvusWriter(WriterConfig(uri=uri, collection=name, model_id=embedder.model_id,
                                       dimension=embedder.dimension, bulk_load=bulk_load, bulk_load_run="test"))
    writer.warm_up()
    ledger = RedisLedger.from_url(redis_url, namespace=name)
    chunker = Chunker(ChunkerConfig(), embedder.tokenizer, embedder.max_seq_length)
    try:
        results = DocumentIndexer(chunker, embedder, writer, ledger, "test").index(
            [Document(f"{prefix}-{i:02d}", 1, text) for i, text in enumerate(texts)])
        assert {r.status for r in results} == {Status.SUCCEEDED}
    finally:
        writer.close()
        ledger.close()
    return name


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, milvus_server, redis_server):
    model = str(derived_model(tmp_path_factory.getbasetemp() / "derived-minilm-256"))
    uri, url = milvus_server.uri, redis_server.url
    return {
        "model": model,
        "active": build(uri, url, unique("active"), TOPICS, None),
        "candidate": build(uri, url, unique("cand"), TOPICS, model, bulk_load=True),
        "short": build(uri, url, unique("short"), TOPICS[:10], model, bulk_load=True),
        "disjoint": build(uri, url, unique("disjoint"), DISJOINT, model, bulk_load=True, prefix="other"),
    }


def admin(*argv: str, report=None) -> tuple[int, StepReport | None]:
    args = [*argv, *(["--report-file", str(report)] if report else [])]
    code = main(args)
    return code, StepReport.from_json(report.read_text()) if report and report.exists() else None


def validate(milvus_server, corpora, candidate: str, tmp_path, *extra: str) -> tuple[int, StepReport]:
    report = tmp_path / f"validate-{uuid.uuid4().hex[:6]}"
    return admin("validate", "--milvus-uri", milvus_server.uri, "--collection", corpora[candidate],
                 "--active-collection", corpora["active"], "--model", corpora["model"], *extra, report=report)


def gates(report: StepReport) -> dict[GateName, object]:
    return {g.name: g for g in report.gates}


def test_validate_passes_every_gate_and_leaves_the_candidate_servable(milvus_server, corpora, tmp_path, capsys):
    code, report = validate(milvus_server, corpora, "candidate", tmp_path,
                            "--sample-queries", json.dumps(QUERIES), "--top-k", "3")
    assert code == EXIT_OK
    assert (report.step, report.ok, report.reason) == (Step.VALIDATE, True, "Validated")
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["reason"] == "Validated"  # stdout too
    found = gates(report)
    assert set(found) == set(GateName)
    assert found[GateName.DOCUMENT_RATIO].value == 1.0
    assert found[GateName.SELF_RETRIEVAL].value >= 0.9 and found[GateName.SELF_RETRIEVAL].threshold == 0.9
    assert found[GateName.DIMENSION].value == DERIVED_DIMENSION
    overlap = found[GateName.QUERY_OVERLAP]
    assert (overlap.passed, overlap.reason, overlap.threshold) == (True, "NotGated", None)
    assert overlap.value > 0.5  # the derived model retrieves like the original
    assert report.counts["active_documents"] == report.counts["candidate_documents"] == len(TOPICS)
    assert report.counts["sampled"] == len(TOPICS) and report.counts["queries"] == len(QUERIES)
    client = open_client(milvus_server.uri)
    try:
        assert str(client.get_load_state(corpora["candidate"])["state"]).endswith("Loaded")
        assert client.describe_index(corpora["candidate"], "vector")["metric_type"] == "COSINE"
    finally:
        client.close()


def test_a_candidate_missing_documents_fails_the_ratio_gate(milvus_server, corpora, tmp_path):
    code, report = validate(milvus_server, corpora, "short", tmp_path, "--min-document-ratio", "0.99")
    assert code == EXIT_OK  # a verdict, not an error: the operator reads the report
    assert (report.ok, report.reason) == (False, "GateFailed")
    ratio = gates(report)[GateName.DOCUMENT_RATIO]
    assert (ratio.passed, ratio.reason) == (False, "RatioTooLow")
    assert ratio.value == pytest.approx(10 / 15, abs=1e-4)
    assert "DocumentRatio" in report.message and "SelfRetrieval" not in report.message
    assert gates(report)[GateName.SELF_RETRIEVAL].passed


def test_another_dimension_fails_the_dimension_gate(milvus_server, corpora, tmp_path):
    code, report = validate(milvus_server, corpora, "candidate", tmp_path, "--dimension", "384")
    assert code == EXIT_OK and not report.ok
    dimension = gates(report)[GateName.DIMENSION]
    assert (dimension.passed, dimension.value, dimension.threshold) == (False, DERIVED_DIMENSION, 384)
    assert [g.name for g in report.gates if not g.passed] == [GateName.DIMENSION]


def test_disjoint_answers_fail_the_query_overlap_gate(milvus_server, corpora, tmp_path):
    code, report = validate(milvus_server, corpora, "disjoint", tmp_path, "--sample-queries", json.dumps(QUERIES),
                            "--min-recall-at-k", "1.0", "--top-k", "3")
    assert code == EXIT_OK and not report.ok
    overlap = gates(report)[GateName.QUERY_OVERLAP]
    assert (overlap.passed, overlap.reason, overlap.threshold) == (False, "OverlapTooLow", 1.0)
    assert overlap.value == 0.0  # not one document in common
    assert gates(report)[GateName.DOCUMENT_RATIO].passed  # as many documents, other ones


def empty_collection(uri: str, name: str, bulk_load: bool = False) -> str:
    writer = MilvusWriter(WriterConfig(uri=uri, collection=name, model_id="m", dimension=8, bulk_load=bulk_load))
    writer.warm_up()
    writer.close()
    return name


def alias_target(uri: str, alias: str) -> str:
    client = open_client(uri)
    try:
        return client.describe_alias(alias)["collection_name"]
    finally:
        client.close()


def swap(uri, alias, collection, expected, tmp_path) -> tuple[int, StepReport]:
    return admin("swap", "--milvus-uri", uri, "--alias", alias, "--collection", collection,
                 "--expect-collection", expected, report=tmp_path / f"swap-{uuid.uuid4().hex[:6]}")


def test_swap_moves_the_alias_only_from_where_it_is_expected_and_rolls_back(milvus_server, tmp_path):
    uri = milvus_server.uri
    previous, candidate, third = (empty_collection(uri, unique("p")), empty_collection(uri, unique("c"), True),
                                  empty_collection(uri, unique("x")))
    alias = unique("alias")
    client = open_client(uri)
    client.create_alias(previous, alias)

    code, report = swap(uri, alias, candidate, previous, tmp_path)
    assert (code, report.ok, report.reason) == (EXIT_OK, True, "Swapped")
    assert alias_target(uri, alias) == candidate
    assert report.counts["swap_ms"] >= 0 and report.counts["loaded"] == 1  # the bulk-loaded one was made servable
    assert report.model == "m"  # the model id the candidate records, for status.activeModel
    assert str(client.get_load_state(candidate)["state"]).endswith("Loaded") and client.list_indexes(candidate)

    code, report = swap(uri, alias, candidate, previous, tmp_path)
    assert (code, report.ok, report.reason, report.model) == (EXIT_OK, True, "AlreadySwapped", "m")

    code, report = swap(uri, alias, previous, candidate, tmp_path)  # the rollback
    assert (code, report.reason) == (EXIT_OK, "Swapped") and alias_target(uri, alias) == previous

    client.alter_alias(third, alias)  # someone else moved it
    code, report = swap(uri, alias, candidate, previous, tmp_path)
    assert (code, report.ok, report.reason) == (EXIT_PERMANENT, False, "AliasMoved")
    assert third in report.message and alias_target(uri, alias) == third  # never repointed

    code, report = swap(uri, unique("nosuch"), candidate, previous, tmp_path)
    assert (code, report.reason) == (EXIT_PERMANENT, "AliasMoved") and "does not exist" in report.message
    client.close()


def ledger_keys(redis, collection: str) -> list[bytes]:
    return [*redis.scan_iter(match=f"tributary:ledger:{{{collection}}}:*"),
            *redis.scan_iter(match=f"tributary:provenance:{{{collection}}}:*")]


def test_retire_refuses_an_aliased_collection_then_drops_it_with_its_ledger(milvus_server, redis_server,
                                                                           corpora, tmp_path):
    uri, url = milvus_server.uri, redis_server.url
    previous = build(uri, url, unique("old"), TOPICS[:4], None)
    successor = build(uri, url, unique("new"), TOPICS[:4], None)
    index, alias = unique("idx"), unique("alias")
    redis = redis_client(url)
    redis.hset(f"tributary:provenance:{{{previous}}}:ingestionjob/ns/docs", "doc-00", '["s3://b/doc-00", 1]')
    redis.hset(repair_key(index, previous), "doc-01", "1")
    before = len(ledger_keys(redis, previous))
    assert before == 5  # four documents' records and one provenance hash
    client = open_client(uri)
    client.create_alias(previous, alias)
    retire = ("retire", "--milvus-uri", uri, "--collection", previous, "--alias", alias, "--ledger", url,
              "--index", index)

    code, report = admin(*retire, report=tmp_path / "retire-1")
    assert (code, report.ok, report.reason) == (EXIT_PERMANENT, False, "StillAliased")
    assert alias in report.message and client.has_collection(previous)
    assert client.has_collection(companion_name(previous))  # its parsed texts, kept while it is served
    assert len(ledger_keys(redis, previous)) == before and redis.exists(repair_key(index, previous))

    assert swap(uri, alias, successor, previous, tmp_path)[1].reason == "Swapped"
    code, report = admin(*retire, report=tmp_path / "retire-2")
    assert (code, report.ok, report.reason) == (EXIT_OK, True, "Retired")
    assert report.counts == {"rows": 4, "keys": before + 1}
    assert not client.has_collection(previous) and not client.has_collection(companion_name(previous))
    assert client.has_collection(companion_name(successor))
    assert ledger_keys(redis, previous) == [] and not redis.exists(repair_key(index, previous))
    assert len(ledger_keys(redis, successor)) == 4 and client.has_collection(successor)  # untouched

    code, report = admin(*retire, report=tmp_path / "retire-3")
    assert (code, report.ok, report.reason, report.counts) == (EXIT_OK, True, "Retired", {"rows": 0, "keys": 0})
    client.close()
    redis.close()


def test_unreachable_milvus_is_one_line_and_retryable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRIBUTARY_MILVUS_TOKEN", "root:s3cr3t-token")
    code, report = admin("swap", "--milvus-uri", f"http://127.0.0.1:{free_port()}", "--alias", "a",
                         "--collection", "c", "--expect-collection", "p", report=tmp_path / "none")
    captured = capsys.readouterr()
    assert (code, report) == (EXIT_FATAL, None)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tributary-index-admin: error:") and "Milvus" in lines[0]
    assert "s3cr3t" not in captured.err + captured.out


def test_retire_with_a_sqlite_ledger_deletes_only_that_namespace(milvus_server, tmp_path):
    from tributary_workers.ledger import SQLiteLedger

    gone, kept = empty_collection(milvus_server.uri, unique("gone")), unique("kept")
    path = tmp_path / "ledger.db"
    for namespace in (gone, kept):
        ledger = SQLiteLedger(path, namespace)
        ledger.commit("doc-00", 1, "h", "test", 1)
        ledger.close()
    code, report = admin("retire", "--milvus-uri", milvus_server.uri, "--collection", gone, "--ledger", str(path),
                         report=tmp_path / "retire")
    assert (code, report.reason, report.counts) == (EXIT_OK, "Retired", {"rows": 0, "keys": 1})
    assert SQLiteLedger(path, gone).get("doc-00") is None
    assert SQLiteLedger(path, kept).get("doc-00") is not None


def test_drift_counts_orphan_and_foreign_rows_of_a_collection(milvus_server, redis_server, tmp_path):
    name = build(milvus_server.uri, redis_server.url, unique("drift"), TOPICS[:5], None)
    code, clean = admin("drift", "--milvus-uri", milvus_server.uri, "--collection", name,
                        "--ledger", redis_server.url, report=tmp_path / "clean")
    assert code == 0 and clean.ok and clean.reason == "Clean"
    assert clean.counts == {"documents": 5, "orphans": 0, "foreign": 0}
    client = open_client(milvus_server.uri)
    try:
        row = client.query(name, filter='doc_id == "doc-00"', output_fields=["*"], limit=1)[0]
        planted = [{**row, "pk": "planted-orphan", "doc_id": "planted"},  # no ledger record fences it
                   {**row, "pk": "planted-foreign", "chunk_index": 9, "model_id": "someone/else"}]
        client.upsert(name, planted)
    finally:
        client.close()
    code, found = admin("drift", "--milvus-uri", milvus_server.uri, "--collection", name,
                        "--ledger", redis_server.url, report=tmp_path / "found")
    assert code == 0 and not found.ok and found.reason == "OrphanRows"
    assert found.counts == {"documents": 6, "orphans": 1, "foreign": 1}
    assert "planted" in found.message and "doc-00" in found.message
    code, _ = admin("drift", "--milvus-uri", milvus_server.uri, "--collection", "missing_collection",
                    "--ledger", redis_server.url)
    assert code != 0
