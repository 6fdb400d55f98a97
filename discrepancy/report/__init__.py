"""The report of ``discrepancy analyze``: one self-contained HTML page per run, with the files behind it.

It sits above the analysis and the probes: it shows the analysis's result (``outputs``) together with whatever the
other producers left in the run's analysis folder (``sections``: the LLC and skill-probe results, read through the
folder's contract ``discrepancy.runfile.results``), and never needs torch or the trainers.
"""

from __future__ import annotations

from discrepancy.report.outputs import report_html, summary_dict, write_outputs

__all__ = ["report_html", "summary_dict", "write_outputs"]
