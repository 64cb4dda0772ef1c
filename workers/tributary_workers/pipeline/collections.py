"""Milvus administration of an EmbeddingIndex's collections: what the provisioning Job does.

``provision`` makes the alias serve a collection of the spec's model: it creates the first
collection (with the declared index and metric, loaded with its replicas) and the alias pointing
at it, or adopts the collection an existing alias points at when it records the same model and
dimension (contract.adoption). It never repoints an alias. Running it again is harmless: the
alias then points at the collection it made, which is adopted as provisioned.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tributary_workers.contract.adoption import AdoptAction, Adoption, ExistingAlias, adoption
from tributary_workers.pipeline.writer import (
    MilvusUnavailableError,
    MilvusWriter,
    WriterConfig,
    aliased_collection,
    open_client,
)


def existing_alias(client: Any, alias: str) -> ExistingAlias:
    """What the alias points at, with that collection's recorded properties and vector dimension."""
    collection = aliased_collection(client, alias)
    if not collection:
        return ExistingAlias(None)
    info = client.describe_collection(collection)
    dims = [f.get("params", {}).get("dim") for f in info.get("fields", []) if f.get("name") == "vector"]
    return ExistingAlias(collection, dict(info.get("properties") or {}),
                         int(dims[0]) if dims and dims[0] is not None else None)


def provision(config: WriterConfig, alias: str, expected_dimension: int | None) -> Adoption:
    """Create or adopt the alias' collection; ``config.collection`` names a new one. Returns what
    was decided (a Conflict changes nothing in Milvus)."""
    client = open_client(config.uri, config.token, config.db_name, config.timeout_s)
    try:
        try:
            existing = existing_alias(client, alias)
        except MilvusUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001 - gRPC errors come in many types
            raise MilvusUnavailableError(f"cannot reach Milvus at {config.uri}: {' '.join(str(exc).split())}") from exc
        decision = adoption(alias, config.collection, config.model_id, expected_dimension, existing)
        if decision.action is AdoptAction.CONFLICT:
            return decision
        # Create (or check and load) the collection: the writer's own set-up does exactly that.
        writer = MilvusWriter(replace(config, collection=decision.collection, create_if_missing=True))
        writer.warm_up()
        writer.close()
        if decision.action is AdoptAction.CREATE:
            try:
                client.create_alias(decision.collection, alias)
            except Exception:  # noqa: BLE001
                # Another provisioner made the alias meanwhile: decide again on what it points at.
                return adoption(alias, config.collection, config.model_id, expected_dimension,
                                existing_alias(client, alias))
            return Adoption(AdoptAction.CREATE, decision.collection, "Provisioned",
                            f"created collection {decision.collection} ({config.index_type}, {config.metric_type}, "
                            f"{config.replicas} replica(s)) and alias {alias} pointing at it", config.model_id)
        return decision
    finally:
        client.close()
