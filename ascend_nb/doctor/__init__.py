"""Environment doctor: every check the install guides ask a person to do by hand, as one table.

    >>> from ascend_nb import doctor
    >>> report = doctor.run()            # or run(ascend_root="/usr/local/Ascend", dtype="bfloat16")
    >>> report.table                     # check / status (pass, warn, fail, skip) / found / expected / hint
    >>> report.facts["cann_version"], report.exit_code
"""

from __future__ import annotations

from pathlib import Path

from ascend_nb.doctor.checks import STEPS, Request, evaluate, facts
from ascend_nb.doctor.probe import collect, weights_bytes
from ascend_nb.doctor.report import Check, Report, style_table

__all__ = ["STEPS", "Check", "Report", "Request", "collect", "evaluate", "run", "style_table", "weights_bytes"]


def run(ascend_root: str | Path | None = None, model_bytes: int | None = None, dtype: str = "auto") -> Report:
    """Check this machine. ``ascend_root``: else from ``$ASCEND_HOME_PATH``, else ``/usr/local/Ascend``;
    ``model_bytes``: weights to budget RAM and disk for (default: a 7B model in fp16); ``dtype``: what
    you will run in (``bfloat16`` fails on 310P)."""
    request = Request(model_bytes, dtype)
    probe = collect(ascend_root)
    return Report(evaluate(probe, request), facts(probe))
