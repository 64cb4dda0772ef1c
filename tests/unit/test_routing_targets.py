"""Routing targets' own settings, how a worker resolves and caches them, and local model ids."""

from __future__ import annotations

import os
import typing

import pytest
from tributary_workers.contract import defaults
from tributary_workers.contract.routing import RoutingError, Target, parse_routing
from tributary_workers.pipeline.chunker import ChunkerConfig
from tributary_workers.pipeline.embedder import DEFAULT_MODEL_ID, resolve_model
from tributary_workers.pipeline.writer import MilvusWriter
from tributary_workers.streaming.config import StreamConfig
from tributary_workers.streaming.targets import StageSettings, stage_settings
from tributary_workers.streaming.worker import StreamWorker

# --- the record -----------------------------------------------------------------------------------


def test_targets_take_optional_settings_and_old_records_still_parse():
    old = parse_routing('{"targets": [{"collection": "docs_v1", "model": null}], "generation": 3}')
    assert old.targets[0] == Target(collection="docs_v1")
    assert (old.targets[0].max_tokens, old.targets[0].create) == (None, False)
    record = parse_routing('{"targets": [{"collection": "docs_v1"}, {"collection": "docs_v2", "model": "/m/e5", '
                           '"max_tokens": 128, "overlap_tokens": 16, "backend": "onnx", "quantize": "int8", '
                           '"dimension": 384, "create": true}]}')
    candidate = record.targets[1]
    assert (candidate.max_tokens, candidate.overlap_tokens, candidate.backend, candidate.quantize,
            candidate.dimension, candidate.create) == (128, 16, "onnx", "int8", 384, True)
    assert Target(collection="a", max_tokens=64) != Target(collection="a", max_tokens=96)


def test_the_settings_allowed_are_the_contract_defaults():
    fields = Target.model_fields
    assert set(typing.get_args(fields["backend"].annotation.__args__[0])) == set(defaults.BACKENDS)
    assert set(typing.get_args(fields["quantize"].annotation.__args__[0])) == set(defaults.QUANTIZATIONS)


@pytest.mark.parametrize(("target", "fragment"), [
    ('{"collection": "a", "max_tokens": 0}', "greater than or equal to 1"),
    ('{"collection": "a", "max_tokens": 32, "overlap_tokens": 32}', "overlap_tokens must be less"),
    ('{"collection": "a", "backend": "tensorrt"}', "'torch' or 'onnx'"),
    ('{"collection": "a", "backend": "torch", "quantize": "int8"}', "needs backend onnx"),
    ('{"collection": "a", "dimension": 0}', "greater than or equal to 1"),
    ('{"collection": "a", "maxTokens": 64}', "Extra inputs"),  # extra="forbid" stays
])
def test_invalid_target_settings_are_an_invalid_record(target, fragment):
    with pytest.raises(RoutingError, match=fragment):
        parse_routing(f'{{"targets": [{target}]}}')


# --- a worker's resolution and cache --------------------------------------------------------------


def config(**overrides) -> StreamConfig:
    values = dict(index="docs", redis_url="redis://127.0.0.1:1/0", milvus_uri="http://127.0.0.1:1",
                  chunking=ChunkerConfig(max_tokens=48, overlap_tokens=8), dimension=384)
    values.update(overrides)
    return StreamConfig(**values)


def test_a_target_setting_wins_over_the_workers_and_unset_ones_are_the_workers():
    cfg = config()
    assert stage_settings(None, cfg) == StageSettings(None, "torch", "none", 384, ChunkerConfig(48, 8))
    assert stage_settings(Target(collection="a"), cfg) == stage_settings(None, cfg)
    assert stage_settings(Target(collection="a", max_tokens=96), cfg).chunking == ChunkerConfig(96, 8)
    assert stage_settings(Target(collection="a", overlap_tokens=0), cfg).chunking == ChunkerConfig(48, 0)
    other = stage_settings(Target(collection="a", model="/models/e5"), cfg)
    assert other.dimension is None, "the configured dimension is the configured model's"
    assert stage_settings(Target(collection="a", model="/models/e5", dimension=768), cfg).dimension == 768
    int8 = stage_settings(Target(collection="a", quantize="int8"), cfg)
    assert (int8.backend, int8.quantize) == ("onnx", "int8")
    onnx_worker = config(backend="onnx", quantize="int8")
    assert (stage_settings(Target(collection="a", backend="torch"), onnx_worker).quantize) == "none"
    assert (stage_settings(Target(collection="a"), onnx_worker).quantize) == "int8"


def test_a_target_whose_settings_change_is_rebuilt_and_only_a_secondary_with_create_may_create():
    worker = StreamWorker(config())
    first = parse_routing('{"targets": [{"collection": "v1", "create": true}, {"collection": "v2", "create": true}, '
                          '{"collection": "v0"}], "generation": 1}')
    active, candidate, rollback = worker._targets(first)
    assert worker._targets(first) == [active, candidate, rollback], "unchanged targets are kept"
    assert (active.may_create, candidate.may_create, rollback.may_create) == (False, True, False)
    changed = parse_routing('{"targets": [{"collection": "v1"}, {"collection": "v2", "max_tokens": 96, '
                            '"create": true}], "generation": 2}')
    active2, candidate2 = worker._targets(changed)
    assert candidate2 is not candidate and candidate2.settings.chunking == ChunkerConfig(96, 8)
    assert active2 is not active, "create changed too"
    assert set(worker.targets.open) == {active2, candidate2}, "replaced targets are dropped"
    (configured,) = worker._targets(None)
    assert configured.collection == "docs" and configured.may_create and not configured.routed


def test_cleanup_of_another_chunking_at_the_same_version():
    assert MilvusWriter.beyond_chunks('a"b', 7, 3) == 'doc_id == "a\\"b" and version == 7 and chunk_index >= 3'


# --- local model ids ------------------------------------------------------------------------------


def model_folder(root, name: str, weights: bytes):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "modules.json").write_text("[]")
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "README.md").write_text("about this model")
    return folder


def test_a_local_model_id_is_its_folder_name_and_a_digest_of_its_files(tmp_path):
    one = model_folder(tmp_path / "a", "e5-small", b"weights one")
    other = model_folder(tmp_path / "b", "e5-small", b"weights two")
    same = model_folder(tmp_path / "c", "e5-small", b"weights one")
    path, model_id = resolve_model(str(one))
    name, _, digest = model_id.partition("@")
    assert path == one.resolve() and name == "e5-small" and len(digest) == 12 and int(digest, 16) >= 0
    assert resolve_model(str(other))[1] != model_id, "same folder name, other weights: another model"
    assert resolve_model(str(same))[1] == model_id, "same files: the same model wherever it lies"
    (one / "README.md").write_text("documentation changes nothing")
    assert resolve_model(str(one))[1] == model_id
    (one / "model.safetensors").write_bytes(b"weights ONE")
    os.utime(one / "model.safetensors", ns=(1, 1))
    assert resolve_model(str(one))[1] != model_id, "rewritten weights are noticed (size/mtime key the cache)"


def test_the_bundled_model_keeps_its_published_id():
    assert resolve_model(None)[1] == DEFAULT_MODEL_ID == "sentence-transformers/all-MiniLM-L6-v2"
    assert resolve_model("all-MiniLM-L6-v2")[1] == DEFAULT_MODEL_ID
