"""Prove a conversion: run the original architecture and the converted model on the same token ids.

The source side is :mod:`ascend_nb.convert.original` (float64 by default, straight from the source
weights, no remote code); the converted side is ``transformers.AutoModelForCausalLM`` loaded from
the converted directory, the way users and serving stacks load it. Per position we report the
msprobe-style Cosine and MaxAbsErr of the logits and whether the argmax (greedy) token agrees.

Tolerances depend on the lower precision of the converted weights and the compute dtype (a
converted bf16 checkpoint cannot match a float64 reference to 1e-6); they are in :data:`TOLERANCES`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ascend_nb.convert.sources.gguf_reader import open_gguf
from ascend_nb.convert.kinds import detect_kind, read_source_config
from ascend_nb.convert.output import dtype_name, parse_dtype
from ascend_nb.convert.original import Original, WeightGetter, original_logits
from ascend_nb.device import host_memory, resolve_device
from ascend_nb.errors import AscendNbError
from ascend_nb.progress import transformers_bars_off

DEFAULT_PROMPTS = ("The capital of France is Paris. 北京是中国的首都，上海是最大的城市。",)
MAX_VERIFY_TOKENS = 32


@dataclass(frozen=True)
class Tolerance:
    """Pass when every position has ``cosine >= min_cosine`` and ``max_abs_err <= max_abs_err``."""

    min_cosine: float
    max_abs_err: float


TOLERANCES = {
    torch.float64: Tolerance(1 - 1e-9, 1e-6),
    torch.float32: Tolerance(1 - 1e-5, 1e-2),
    torch.float16: Tolerance(0.999, 0.5),
    torch.bfloat16: Tolerance(0.99, 1.0),
}
_PRECISION_ORDER = (torch.bfloat16, torch.float16, torch.float32, torch.float64)


def tolerance_for(*dtypes: torch.dtype) -> Tolerance:
    """The tolerance of the least precise of ``dtypes``."""
    return TOLERANCES[min(dtypes, key=_PRECISION_ORDER.index)]


def compare_logits(reference: torch.Tensor, converted: torch.Tensor):
    """Per-position metrics of two ``[T, V]`` logit matrices, as a pandas DataFrame."""
    import pandas as pd

    ref, got = reference.double().cpu(), converted.double().cpu()
    diff = (ref - got).abs()
    return pd.DataFrame({
        "position": range(ref.shape[0]),
        "cosine": torch.nn.functional.cosine_similarity(ref, got, dim=-1).tolist(),
        "max_abs_err": diff.amax(-1).tolist(),
        "mean_abs_err": diff.mean(-1).tolist(),
        "reference_top1": ref.argmax(-1).tolist(),
        "converted_top1": got.argmax(-1).tolist(),
    }).assign(agree=lambda df: df.reference_top1 == df.converted_top1)


@dataclass
class VerifyReport:
    """Per-position comparison of the original and converted models (``table``) and the verdict."""

    table: object  # pandas.DataFrame: prompt, position, token_id, cosine, max_abs_err, mean_abs_err, ..., agree
    family: str
    compute_dtype: torch.dtype
    weights_dtype: torch.dtype
    tolerance: Tolerance

    @property
    def min_cosine(self) -> float:
        return float(self.table.cosine.min())

    @property
    def max_abs_err(self) -> float:
        return float(self.table.max_abs_err.max())

    @property
    def greedy_agreement(self) -> float:
        """Fraction of positions whose argmax token is the same on both sides."""
        return float(self.table.agree.mean())

    @property
    def passed(self) -> bool:
        return self.min_cosine >= self.tolerance.min_cosine and self.max_abs_err <= self.tolerance.max_abs_err

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (f"{verdict}: {len(self.table)} positions, min Cosine {self.min_cosine:.8f} "
                f"(>= {self.tolerance.min_cosine}), MaxAbsErr {self.max_abs_err:.3g} (<= {self.tolerance.max_abs_err}), "
                f"greedy agreement {self.greedy_agreement:.1%} [{self.family} reference vs converted "
                f"{dtype_name(self.weights_dtype)} weights computed in {dtype_name(self.compute_dtype)}]")

    def as_dict(self) -> dict:
        return {"passed": self.passed, "min_cosine": self.min_cosine, "max_abs_err": self.max_abs_err,
                "greedy_agreement": self.greedy_agreement, "positions": len(self.table), "family": self.family,
                "compute_dtype": dtype_name(self.compute_dtype), "weights_dtype": dtype_name(self.weights_dtype),
                "tolerance": {"min_cosine": self.tolerance.min_cosine, "max_abs_err": self.tolerance.max_abs_err}}


def gguf_source(model) -> tuple[Original, WeightGetter]:
    """The reference's view of an opened :class:`ascend_nb.convert.sources.gguf_reader.GgufModel` (dequantized on use)."""
    by_name = {t.name: t for t in model.tensors}
    return Original.from_config(model.config.to_dict(), "llama"), lambda name: by_name[name].load()


def source_model(src: Path, kind: str | None = None) -> tuple[Original, WeightGetter]:
    """``(Original, weight getter)`` of an original checkpoint directory or GGUF file."""
    from ascend_nb.models.checkpoint import Checkpoint

    kind = kind or detect_kind(src)
    if kind == "gguf":
        return gguf_source(open_gguf(Path(src)))
    family = {"baichuan2": "baichuan2", "aquila": "aquila"}.get(kind, "llama")
    config = read_source_config(src)
    if family == "llama" and config.get("model_type") != "llama":
        raise AscendNbError(f"{src} has model_type {config.get('model_type')!r}: verify compares Llama, Aquila, "
                            "Baichuan2 and GGUF Llama sources only")
    return Original.from_config(config, family), Checkpoint(src).get


def stored_dtype(model_dir: Path) -> torch.dtype:
    """The weights' dtype recorded in a converted directory's ``config.json``."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    name = str(config.get("dtype") or config.get("torch_dtype") or "float32").removeprefix("torch.")
    return getattr(torch, name)


def check_memory_for_verification(parameters: int, dtype: torch.dtype, device: torch.device) -> None:
    """Raise before a conversion starts when loading the converted model to verify it cannot fit in RAM."""
    if device.type != "cpu":
        return
    needed, available = int(parameters * dtype.itemsize * 1.2), host_memory()[1]
    if available is not None and needed > available:
        raise AscendNbError(f"verifying needs about {needed / 2**30:.1f} GiB of RAM in {dtype_name(dtype)} "
                            f"but {available / 2**30:.1f} GiB are available: pass --verify-dtype bfloat16, "
                            "--verify-device npu|cuda, or --no-verify")


@torch.inference_mode()
def verify_conversion(src: Path, dst: Path, kind: str | None = None, prompts=DEFAULT_PROMPTS,
                      dtype: str | torch.dtype = torch.float32, device: str | torch.device = "cpu",
                      reference_dtype: torch.dtype = torch.float64, max_tokens: int = MAX_VERIFY_TOKENS,
                      raise_on_failure: bool = True,
                      source: tuple[Original, WeightGetter] | None = None) -> VerifyReport:
    """Compare the original model at ``src`` with the converted directory ``dst`` on ``prompts``.

    Prompts are tokenized with the converted tokenizer (each cut to ``max_tokens``); the converted
    model runs through transformers in ``dtype`` on ``device``, the reference in ``reference_dtype``
    on CPU. Raises :class:`AscendNbError` when the tolerance is exceeded (unless ``raise_on_failure``
    is False). ``source`` passes an already opened source (see :func:`source_model`).
    """
    import pandas as pd
    from transformers import AutoModelForCausalLM, AutoTokenizer

    arch, weight = source or source_model(Path(src), kind)
    dtype, device = parse_dtype(dtype) or torch.float32, resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(dst, local_files_only=True)
    with transformers_bars_off():
        model = AutoModelForCausalLM.from_pretrained(dst, dtype=dtype, local_files_only=True).to(device).eval()
    frames = []
    for number, prompt in enumerate(prompts):
        ids = tokenizer.encode(prompt, add_special_tokens=True)[:max_tokens] if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise AscendNbError(f"prompt {number} encodes to no tokens: give some text")
        input_ids = torch.tensor([ids])
        expected = original_logits(arch, weight, input_ids, dtype=reference_dtype)[0]
        got = model(input_ids=input_ids.to(device)).logits[0].float()
        frames.append(compare_logits(expected, got).assign(prompt=number, token_id=ids))
    table = pd.concat(frames, ignore_index=True)
    table = table[["prompt", "position", "token_id", "cosine", "max_abs_err", "mean_abs_err",
                   "reference_top1", "converted_top1", "agree"]]
    weights_dtype = stored_dtype(dst)
    report = VerifyReport(table=table, family=arch.family, compute_dtype=dtype, weights_dtype=weights_dtype,
                          tolerance=tolerance_for(dtype, weights_dtype, reference_dtype))
    if raise_on_failure and not report.passed:
        raise AscendNbError(f"the converted model does not compute what the original does: {report.summary()}; "
                            "please report this with the source config.json")
    return report


def verification_step(src: Path, kind: str, enabled: bool, dtype: str | torch.dtype, device: str | torch.device,
                      parameters: int, source: tuple[Original, WeightGetter] | None = None):
    """The check a converter runs on its output before renaming it into place (None when disabled).

    Runs the memory check now, so a conversion that could not be verified fails before it starts.
    """
    import functools

    if not enabled:
        return None
    dtype, device = parse_dtype(dtype) or torch.float32, resolve_device(device)
    check_memory_for_verification(parameters, dtype, device)
    return functools.partial(verify_conversion, src, kind=kind, dtype=dtype, device=device, source=source)
