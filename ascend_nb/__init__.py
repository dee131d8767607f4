"""ascend-nb: run Aquila, Baichuan2 and any Llama-family model on Ascend NPU, CUDA or CPU from JupyterLab."""

import os

# torch >= 2.5 autoloads torch_npu on `import torch` and fails without CANN; ascend_nb.device
# imports torch_npu explicitly when NPU is probed instead. Users can still set it to 1 themselves.
os.environ.setdefault("TORCH_DEVICE_BACKEND_AUTOLOAD", "0")
# Models come from local paths only, never a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"

from ascend_nb.models.params import GenerationError, GenerationParams, GenerationResult, Timings  # noqa: E402
from ascend_nb.engine.loading import load  # noqa: E402
from ascend_nb.ui.ipython import install_error_display  # noqa: E402

install_error_display()  # inside IPython/Jupyter, an AscendNbError shows as its one line

__all__ = ["GenerationError", "GenerationParams", "GenerationResult", "Timings", "load", "__version__"]
