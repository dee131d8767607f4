"""Rotating the residual stream before ``w8a8`` quantization (QuaRot / SpinQuant's offline rotation).

Per-token int8 activations lose the most where a few channels of the hidden state carry outliers. An
orthogonal ``Q`` ``[H, H]`` spreads every channel over all of them, and the model computes the same thing
in exact arithmetic when its residual stream lives in the rotated basis ``h' = h Q``: the embeddings
become ``E Q``, each RMSNorm's weight ``g`` moves into the linears it feeds (``W diag(g) Q`` for q/k/v,
gate/up and the LM head; the norms then weigh 1, and RMSNorm commutes with ``Q``), and the linears that
write the stream become ``Q^T W`` (o, down). Nothing runs at decode time: only the stored weights change,
as the model loads, with no calibration data.

``Q = diag(s) (R ⊗ H_a ⊗ H_b ...)`` for ``H = m 2^k``: random signs ``s``, a random orthogonal ``R``
``[m, m]`` for the odd part (576 = 9 x 64 on SmolLM2) and normalized Hadamard factors of at most 64 for
``2^k``, all seeded, so the same model always gets the same ``Q``; it is applied factor by factor
(``O(H (m + sum of factors))`` a row instead of ``O(H^2)``: a 4096-wide 7B layer in well under a second).
"""

from __future__ import annotations

import math

import torch

SEED = 0
MAX_HADAMARD = 64  # the largest Hadamard factor, applied as one small matmul
BLOCK_ELEMENTS = 1 << 22  # weights rotated at a time (16 MB in float32)


def _hadamard(n: int) -> torch.Tensor:
    """The normalized Sylvester Hadamard matrix ``[n, n]`` (n a power of two)."""
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)))
    return h / math.sqrt(n)


def _hadamard12() -> torch.Tensor:
    """The normalized Hadamard matrix of order 12 (Paley's construction from the squares modulo 11)."""
    squares = {i * i % 11 for i in range(1, 11)}
    jacobsthal = torch.tensor([[0.0 if i == j else (1.0 if (j - i) % 11 in squares else -1.0) for j in range(11)]
                               for i in range(11)])
    core = torch.zeros(12, 12)
    core[0, 1:], core[1:, 0], core[1:, 1:] = 1.0, -1.0, jacobsthal
    return (torch.eye(12) + core) / math.sqrt(12)


class Rotation:
    """The seeded orthogonal ``Q`` ``[n, n]`` of a hidden size ``n``, kept as its Kronecker factors."""

    def __init__(self, n: int, seed: int = SEED):
        generator = torch.Generator().manual_seed(seed)
        self.n = n
        self.signs = torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1
        power = n & -n  # the largest power of two dividing n
        odd = n // power
        self.factors: list[torch.Tensor] = []
        while odd % 3 == 0 and power >= 4:  # 12 = 3 x 4: a Hadamard factor where a random one would do worse
            self.factors.append(_hadamard12())
            odd, power = odd // 3, power // 4
        if odd > 1:
            r, upper = torch.linalg.qr(torch.randn(odd, odd, generator=generator, dtype=torch.float64))
            self.factors.append((r * upper.diagonal().sign()).float().contiguous())
        while power > 1:
            size = min(power, MAX_HADAMARD)
            self.factors.append(_hadamard(size))
            power //= size

    def _by_factors(self, x: torch.Tensor, transpose: bool) -> torch.Tensor:
        rows = x.reshape(-1, *(f.shape[0] for f in self.factors))
        for axis, factor in enumerate(self.factors, start=1):
            factor = factor.to(x.device)
            rows = (rows.movedim(axis, -1) @ (factor.T if transpose else factor)).movedim(-1, axis)
        return rows.reshape(x.shape)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ Q`` (float32) for ``x`` ``[..., n]``: a hidden state into the rotated basis, or a weight's input side."""
        return self._by_factors(x.float() * self.signs.to(x.device), transpose=False)

    def undo(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ Q^T`` (float32): a rotated hidden state back in the model's own basis."""
        return self._by_factors(x.float(), transpose=True) * self.signs.to(x.device)

    def matrix(self) -> torch.Tensor:
        """``Q`` itself (float32; for tests and small sizes)."""
        return self.apply(torch.eye(self.n))

    def fold_layer(self, t: dict[str, torch.Tensor]) -> None:
        """Replace one decoder layer's tensors ``t`` (``input_norm, q, k, v, o, post_norm, gate, up, down``, in the
        model dtype) in place by those of the same layer on the rotated stream."""
        for norm, readers in (("input_norm", ("q", "k", "v")), ("post_norm", ("gate", "up"))):
            for name in readers:  # W diag(g) Q
                self.rotate_rows_(t[name], t[norm].float())
            t[norm] = torch.ones_like(t[norm])
        for name in ("o", "down"):  # Q^T W = (W^T Q)^T: the columns of W as rows
            self.rotate_rows_(t[name].T)

    def rotate_rows_(self, rows: torch.Tensor, scale: torch.Tensor | None = None) -> None:
        """``rows <- (rows diag(scale)) Q`` in place (``rows`` ``[R, n]``, any strides), a block of rows at a time in
        float32: a load holds one block's working copies, never a whole 7B weight's (or embedding's) in float32."""
        block = max(1, BLOCK_ELEMENTS // self.n)
        for start in range(0, rows.shape[0], block):
            part = rows[start:start + block].float()
            rows[start:start + block] = self.apply(part if scale is None else part * scale).to(rows.dtype)


class FoldedRows:
    """The LM head of the rotated model, ``W diag(g) Q``, read a block of rows at a time from ``rows`` (a tensor or a
    :class:`~ascend_nb.engine.accelerated.model.CheckpointRows`) as the quantizers take it: never whole in float32."""

    def __init__(self, rows, norm: torch.Tensor, rotation: Rotation):
        self.rows, self.norm, self.rotation = rows, norm.float(), rotation
        self.shape, self.dtype, self.device = rows.shape, rows.dtype, rows.device

    def __getitem__(self, rows: slice) -> torch.Tensor:
        return self.rotation.apply(self.rows[rows].float() * self.norm).to(self.dtype)
