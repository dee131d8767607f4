"""The accelerated backend: a compact Llama-family runtime with per-device kernels (the ATB role).

``ascend_nb.load(model, backend="accelerated", quantize="int8" | None, graphs=None)``.
"""

from ascend_nb.engine.accelerated.engine import AcceleratedEngine

__all__ = ["AcceleratedEngine"]
