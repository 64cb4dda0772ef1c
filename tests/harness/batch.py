"""Running one batch shard in-process against the test's Milvus, with its state under tmp_path."""

from __future__ import annotations

from tributary_workers.batch.worker import BatchConfig, BatchWorker


def run_batch(tmp_path, milvus_server, collection, source, **overrides) -> tuple[BatchWorker, object]:
    state = tmp_path / "state"
    config = BatchConfig(
        source=str(source), collection=collection, milvus_uri=milvus_server.uri,
        ledger_url=overrides.pop("ledger_url", str(state / "ledger.sqlite")),
        checkpoint_url=overrides.pop("checkpoint_url", str(state / "checkpoints.sqlite")),
        **overrides,
    )
    worker = BatchWorker(config)
    worker.warm_up()
    try:
        return worker, worker.run()
    finally:
        worker.close()
