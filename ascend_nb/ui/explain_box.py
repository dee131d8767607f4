"""Paste an error, get the cause and the fix: a text area and two buttons over :func:`ascend_nb.doctor.explain`.

"Explain" matches the pasted text against ``data/error_signatures.csv``; "Explain failed checks"
does the same for the doctor report the box was given. The table of matches (signature, cause,
fix, check, source) replaces the box's result each time; :meth:`ExplainBox.explain` and
:meth:`ExplainBox.explain_report` do what the buttons do, for scripts and tests.
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import pandas as pd

from ascend_nb.doctor import known_errors
from ascend_nb.doctor.report import Report
from ascend_nb.errors import AscendNbError
from ascend_nb.ui.controls import button

PLACEHOLDER = "Paste the error here (the traceback or the log lines around the first error)"


def render(frame: pd.DataFrame) -> str:
    """The matches as an HTML table with clickable sources, or the no-match message."""
    if frame.empty:
        return f"<p>{html.escape(frame.attrs.get('message') or known_errors.NO_MATCH)}</p>"
    return frame.to_html(index=False, escape=True, render_links=True, border=0, classes="anb-explain")


class ExplainBox(widgets.VBox):
    """A text area, an "Explain" button (and "Explain failed checks" when given a doctor report) and the result."""

    def __init__(self, report: Report | None = None):
        self.report = report
        self.text = widgets.Textarea(placeholder=PLACEHOLDER, layout=widgets.Layout(width="100%", height="140px"))
        self.button = button("Explain", "search", "primary", "Match the pasted text against the known errors")
        self.checks_button = button("Explain failed checks", "stethoscope", tooltip="The known errors behind the "
                                    "doctor's failed checks", disabled=report is None)  # as wide as its label
        self.result = widgets.HTML()
        self.last: pd.DataFrame | None = None
        self.button.on_click(lambda _: self.explain(self.text.value))
        self.checks_button.on_click(lambda _: self.explain_report())
        super().__init__([self.text, widgets.HBox([self.button, self.checks_button]), self.result])

    def _show(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.last = frame
        self.result.value = render(frame)
        return frame

    def explain(self, text: str) -> pd.DataFrame:
        """Match ``text`` (what the Explain button does); an empty text shows how to use the box."""
        try:
            return self._show(known_errors.explain(text))
        except AscendNbError as exc:
            self.last = None
            self.result.value = f"<p>{html.escape(str(exc))}</p>"
            return pd.DataFrame(columns=list(known_errors.COLUMNS))

    def explain_report(self) -> pd.DataFrame:
        """The signatures behind the report's failed checks."""
        if self.report is None:
            raise AscendNbError("this box has no doctor report: ExplainBox(doctor.run())")
        return self._show(known_errors.explain_checks(self.report.checks))

    def summary(self) -> str:
        """One line per match of the last explanation: ``signature -> fix`` (or the message)."""
        if self.last is None:
            return "nothing explained yet"
        if self.last.empty:
            return self.last.attrs.get("message") or known_errors.NO_MATCH
        return "\n".join(f"{row.signature} -> {row.fix}" for row in self.last.itertuples(index=False))
