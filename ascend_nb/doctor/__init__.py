"""Environment doctor: every check the install guides ask a person to do by hand, as one table.

    >>> from ascend_nb import doctor
    >>> report = doctor.run()            # or run(ascend_root="/usr/local/Ascend", dtype="bfloat16")
    >>> report.table                     # check / status (pass, warn, fail, skip) / found / expected / hint
    >>> report.facts["cann_version"], report.exit_code
    >>> doctor.explain(error_text)        # known error signatures: cause, fix, confirming check, source
    >>> doctor.explain_checks(report.checks)
"""

from __future__ import annotations

from pathlib import Path

from ascend_nb.doctor.checks import STEPS, Request, evaluate, facts
from ascend_nb.doctor.probe import collect, weights_bytes
from ascend_nb.doctor.report import Check, Report, style_table
from ascend_nb.lazy import lazy_exports

_EXPORTS = {"explain": "ascend_nb.doctor.known_errors", "explain_checks": "ascend_nb.doctor.known_errors"}
__all__ = ["STEPS", "Check", "Report", "Request", "collect", "evaluate", "explain", "explain_checks", "run",
           "style_table", "weights_bytes"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


def run(ascend_root: str | Path | None = None, model_bytes: int | None = None, dtype: str = "auto") -> Report:
    """Check this machine. ``ascend_root``: else from ``$ASCEND_HOME_PATH``, else ``/usr/local/Ascend``;
    ``model_bytes``: weights to budget RAM and disk for (default: a 7B model in fp16); ``dtype``: what
    you will run in (``bfloat16`` fails on 310P)."""
    request = Request(model_bytes, dtype)
    probe = collect(ascend_root)
    return Report(evaluate(probe, request), facts(probe))
