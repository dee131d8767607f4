"""``ascend_nb.load``: a registry name or a local directory -> a ready engine on the chosen device.

The top of the engine layer: it knows every backend (:data:`BACKENDS`, the one backend table), so
bench, precision, inspect and ui build engines through it and nothing below imports it.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path

import torch

from ascend_nb import device as devices
from ascend_nb.errors import AscendNbError, note_once
from ascend_nb.convert.embedded import ensure_embedded_model
from ascend_nb.engine import speculative
from ascend_nb.models.embedded import EMBEDDED_MODEL
from ascend_nb.models.checksums import Verify
from ascend_nb.models.footprint import require_fit
from ascend_nb.models.registry import MODELS, ModelSpec, detect_spec, get_spec
from ascend_nb.models.validation import read_config, validate_model_dir
from ascend_nb.quant_formats import check_quantize

DEFAULT_MODEL = EMBEDDED_MODEL
# backend name -> "module:class"; each class has from_directory(**engine_kwargs)
BACKENDS = {
    "transformers": "ascend_nb.engine.transformers_backend:TransformersEngine",
    "accelerated": "ascend_nb.engine.accelerated:AcceleratedEngine",
    "openai": "ascend_nb.engine.openai_backend:OpenAIEngine",
}
LOCAL_BACKENDS = ("transformers", "accelerated")  # run the model in this process (the others talk to a server)


def check_backend(backend: str) -> str:
    """``backend`` if :data:`BACKENDS` names it; else the one error listing them."""
    if backend not in BACKENDS:
        raise AscendNbError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    return backend


def engine_class(backend: str) -> type:
    """The engine class of a backend name, imported on first use (so ``import ascend_nb`` stays light)."""
    module_name, class_name = BACKENDS[check_backend(backend)].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def resolve_model_dir(model: str | Path) -> Path:
    """A registry name (the embedded model is fetched on first use) or an existing model directory."""
    text = str(model)
    if text in MODELS:
        spec = MODELS[text]
        if not spec.embedded:
            raise AscendNbError(f"{text} weights are not bundled: pass the local directory holding them "
                                f"(convert first with `ascend-nb convert {spec.family} SRC DST`)")
        return ensure_embedded_model()
    path = Path(text).expanduser()
    if not path.exists():
        if "/" not in text and not text.startswith("."):
            get_spec(text)  # raises: unknown model name, listing the known ones
        raise AscendNbError(f"model directory {path} does not exist: give a registry name ({', '.join(MODELS)}) "
                            "or a local directory (no hub downloads)")
    return path


def check_quantize_backend(backend: str, quantize: str | None, flags: tuple[str, str] = ("--backend", "--quantize")
                           ) -> str | None:
    """``quantize`` (a format of :mod:`ascend_nb.quant_formats`, or None) if ``backend`` can run it; else one
    line saying what to change (naming the command's backend and quantize ``flags``): only the accelerated
    backend quantizes."""
    quantize = check_quantize(quantize)
    if check_backend(backend) != "accelerated" and quantize is not None:
        how = "serves the model as the server has it" if backend == "openai" else "runs the checkpoint's weights as they are"
        raise AscendNbError(f"quantize {quantize!r} needs backend 'accelerated' (the {backend} backend {how}): "
                            f"use {flags[0]} accelerated, or drop {flags[1]}")
    return quantize


def check_loadable(model: str | Path = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto",
                   backend: str = "transformers", kernels: str | None = None, graphs: bool | None = None,
                   tp: int = 1, quantize: str | None = None):
    """What :func:`load` decides before it reads any file but ``config.json``: the backend, the model
    directory and the placement (:func:`ascend_nb.device.place`: device, dtype, kernel path, graphs,
    tensor-parallel group). Raises :class:`AscendNbError` on the first problem; returns
    ``(model_dir, config dict, placement)``, or None for the ``openai`` backend."""
    check_quantize_backend(backend, quantize)  # the backend's name, and quantize only where it runs
    if backend == "openai":
        return None
    model_dir = resolve_model_dir(model)
    raw_config = read_config(model_dir)
    placement = devices.place(device, dtype, backend, kernels=kernels, graphs=graphs, tp=tp)
    if placement.dtype == torch.float16 and placement.device.type == "cpu":
        note_once("float16 on CPU is slow (emulated) and rounds unlike an NPU's fp16 kernels: "
                  "use bfloat16 or float32 on CPU, float16 on the NPU")
    return model_dir, raw_config, placement


def load(model: str | Path = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto",
         backend: str = "transformers", max_seq_len: int | None = None, trust_remote_code: bool = False,
         template: str | None = None, verify: Verify = True, **backend_options):
    """Load a model and return an engine with ``generate``, ``stream`` and ``chat``.

    ``model`` is a registry name (``smollm2-135m-instruct`` is embedded) or a local directory in
    transformers format (convert Aquila/Baichuan2 downloads first with ``ascend-nb convert``).
    ``device`` is ``auto`` (npu > cuda > cpu), ``npu``, ``cuda`` or ``cpu``; ``dtype`` is ``auto``
    (fp16 on NPU, bf16 on CUDA/CPU where supported, else fp32) or a dtype name. ``max_seq_len``
    bounds prompt + new tokens (default: the model's ``max_position_embeddings``). Remote code is
    off unless ``trust_remote_code=True``. The directory is checked first (:mod:`ascend_nb.models.validation`:
    config, tokenizer, every tensor's name and shape, and ``checksums.sha256``: by default a fast check
    that hashes only files whose size or mtime changed since they were last hashed, so not a guarantee;
    ``verify="full"`` hashes every file, ``verify=False`` skips it); a broken one is refused in one line.
    ``backend="openai"`` connects to an OpenAI-compatible server instead (``model`` is the served
    model's name; ``base_url``, ``api_key`` and ``timeout`` options, defaulting to
    ``$OPENAI_BASE_URL`` / ``$OPENAI_API_KEY``).
    Accelerated-backend options: ``quantize``, ``graphs``, ``tp`` and ``kernels`` (a kernel path of
    :data:`ascend_nb.device.KERNEL_PATHS`, default the fastest this machine runs; also
    ``$ASCEND_NB_KERNELS``), decided together by :func:`ascend_nb.device.place`.
    """
    quantize = backend_options.pop("quantize", None)
    checked = check_loadable(model, device, dtype, backend, kernels=backend_options.pop("kernels", None),
                             graphs=backend_options.pop("graphs", None), tp=backend_options.pop("tp", 1),
                             quantize=quantize)
    if checked is None:  # a served model: nothing to load here
        return engine_class("openai")(str(model), **backend_options)
    model_dir, raw_config, placement = checked
    config, tokenizer = validate_model_dir(model_dir, raw_config, trust_remote_code, verify)
    if backend == "accelerated":
        backend_options.update(placement=placement, quantize=quantize)
    spec: ModelSpec = detect_spec(model_dir, raw_config, bool(getattr(tokenizer, "chat_template", None)))
    if template is not None:
        spec = replace(spec, template=template)
    limit = config.max_position_embeddings
    if max_seq_len is not None and not 0 < max_seq_len <= limit:
        raise AscendNbError(f"max_seq_len must be in 1..{limit} (the model's max_position_embeddings), got {max_seq_len}")
    require_fit(config, placement.device, placement.dtype, quantize, max_seq_len or limit,
                tp=placement.tp.world_size if placement.tp else 1)  # refuse what cannot fit before anything is allocated
    return engine_class(backend).from_directory(
        model_dir=model_dir, spec=spec, tokenizer=tokenizer, config=config, device=placement.device,
        dtype=placement.dtype, max_seq_len=max_seq_len or limit, trust_remote_code=trust_remote_code, **backend_options)


speculative.register_loader(load)  # draft:MODEL engines are loaded like any other
