"""ONNX Runtime inference of a sentence-transformers model, exported locally from its own weights.

The export (``torch.onnx.export`` of the transformer, mean pooling and normalisation done here in
numpy) runs once per model and is cached in a folder the worker owns: TRIBUTARY_MODEL_CACHE, else
``$XDG_CACHE_HOME/tributary/models`` (``~/.cache/tributary/models``). Nothing is downloaded; the
bundled model's folder may be read-only (site-packages in the image), so nothing is written there.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

from tributary_workers.contract import env as ENV
from tributary_workers.errors import PermanentError
from tributary_workers.pipeline.bucketing import length_batches, padded
from tributary_workers.pipeline.threads import intra_op_threads

EXPORT_VERSION = "1"  # bump when the exported graph changes: old cache entries are then ignored
OPSET = 17


class OnnxBackendError(PermanentError, ValueError):
    """The model cannot run on ONNX Runtime (not installed, or a pooling we do not reproduce); one line."""


def cache_root() -> Path:
    if os.environ.get(ENV.MODEL_CACHE):
        return Path(os.environ[ENV.MODEL_CACHE]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tributary" / "models"


def model_fingerprint(model_path: Path) -> str:
    """Identifies the weights without reading them: config text plus every file's size and mtime."""
    digest = hashlib.sha256(EXPORT_VERSION.encode())
    for file in sorted(p for p in model_path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(model_path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def check_mean_pooling(model_path: Path) -> None:
    config = model_path / "1_Pooling" / "config.json"
    try:
        pooling = json.loads(config.read_text())
    except (OSError, ValueError):
        raise OnnxBackendError(f"backend onnx needs a mean-pooling model; {model_path} has no 1_Pooling/config.json") from None
    if not pooling.get("pooling_mode_mean_tokens") or any(
            value for key, value in pooling.items() if key.startswith("pooling_mode_") and key != "pooling_mode_mean_tokens"):
        raise OnnxBackendError(f"backend onnx supports mean pooling only; {model_path} pools otherwise (use backend torch)")


_export_lock = threading.Lock()


def exported_model(st_model, model_path: Path, quantize: str = "none") -> Path:
    """Path of the ONNX file for this model (and quantization), exporting it first if not cached."""
    folder = cache_root() / f"{model_path.name}-{model_fingerprint(model_path)}"
    fp32, int8 = folder / "model.onnx", folder / "model-int8.onnx"
    with _export_lock:
        if not fp32.exists():
            folder.mkdir(parents=True, exist_ok=True)
            _export(st_model, fp32)
        if quantize == "int8" and not int8.exists():
            _quantize(fp32, int8)
    return int8 if quantize == "int8" else fp32


def _atomic_target(target: Path) -> Path:
    # Another process may export at the same time: each writes its own file, the last rename wins.
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=target.stem + ".", suffix=".tmp.onnx")
    os.close(handle)
    os.chmod(name, 0o644)  # a shared cache: other users of the folder may read it
    return Path(name)


def _export(st_model, target: Path) -> None:
    import torch

    transformer = st_model[0].auto_model

    class LastHidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = transformer

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    sample = st_model.tokenizer(["export sample"], return_tensors="pt")
    inputs = tuple(sample[name] if name in sample else torch.zeros_like(sample["input_ids"])
                   for name in ("input_ids", "attention_mask", "token_type_ids"))
    dynamic = {0: "batch", 1: "sequence"}
    tmp = _atomic_target(target)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
            torch.onnx.export(LastHidden().eval(), inputs, str(tmp), opset_version=OPSET, dynamo=False,
                              input_names=["input_ids", "attention_mask", "token_type_ids"],
                              output_names=["last_hidden_state"],
                              dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic,
                                            "token_type_ids": dynamic, "last_hidden_state": dynamic})
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _quantize(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = _atomic_target(target)
    try:
        # Per-channel weight scales keep far more of fp32's geometry than one scale per tensor.
        quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def open_session(path: Path, device: str, threads: int | None = None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise OnnxBackendError("backend onnx needs the onnxruntime package (pip install onnxruntime)") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or intra_op_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle threads must not spin: a pod's quota (and a stage's neighbours) pay for spinning.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")  # written, not measured (no GPU in CI)
    return ort.InferenceSession(str(path), options, providers=providers)


class OnnxEncoder:
    """Tokenize once, cut length-sorted batches, run the graph, mean-pool and normalise in numpy."""

    def __init__(self, session, tokenizer, max_seq_length: int, batch_size: int):
        self.session = session
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.input_names = {i.name for i in session.get_inputs()}
        self.pad_id = tokenizer.pad_token_id or 0

    def encode(self, texts: list[str]) -> np.ndarray:
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_seq_length,
                             add_special_tokens=True)["input_ids"]
        lengths = [len(row) for row in ids]
        out: np.ndarray | None = None
        for batch in length_batches(lengths, self.batch_size):
            input_ids, mask = padded([ids[i] for i in batch], self.pad_id)
            feed = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(mask)}
            hidden = self.session.run(None, {k: v for k, v in feed.items() if k in self.input_names})[0]
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            if out is None:
                out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            out[batch] = pooled
        return out
