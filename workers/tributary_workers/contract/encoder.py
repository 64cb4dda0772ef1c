"""Which encoder made a collection's vectors: the model id, plus the quantization when it changes them.

torch and fp32 ONNX Runtime run the same weights in the same precision; their vectors agree at
cosine >= 0.99 (tests/integration/test_embed_backends.py holds them to it), so they count as one
encoder and may share a collection; so do the direct path's fp16 vectors on a GPU, within cosine
0.999 of fp32 (tests/integration/test_embed_direct.py). int8 moves vectors measurably: it is another encoder, so a
collection records it and refuses the other (switching is a re-embedding, like a model change).
"""

from __future__ import annotations

from tributary_workers.contract import defaults


def check_backend(backend: str, quantize: str) -> None:
    if backend not in defaults.BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(defaults.BACKENDS)}, got {backend!r}")
    if quantize not in defaults.QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(defaults.QUANTIZATIONS)}, got {quantize!r}")
    if quantize != "none" and backend != "onnx":
        raise ValueError(f"quantize {quantize} needs backend onnx")


def encoder_id(model_id: str, backend: str = defaults.BACKEND, quantize: str = defaults.QUANTIZE) -> str:
    """What a collection records as its model: the model id alone for full-precision backends."""
    check_backend(backend, quantize)
    return model_id if quantize == "none" else f"{model_id}+{backend}-{quantize}"
