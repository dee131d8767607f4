"""The base of every linear kernel: a callable ``x -> x @ W.T`` with an optional output dtype (the
implementations are in :mod:`~ascend_nb.engine.accelerated.kernels` and, for the NPU's quantized matmuls,
:mod:`~ascend_nb.engine.accelerated.npu_quant`)."""

from __future__ import annotations

import torch


class Linear:
    """A callable ``x -> x @ W.T``; ``out_dtype`` (set by :meth:`Kernels.linear`) casts the result,
    and a native GEMV writes it directly from its float32 accumulator."""

    out_dtype: torch.dtype | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.forward(x)
        return y if self.out_dtype is None else y.to(self.out_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
