"""``hf-gazecons report DIR``: one self-contained ``report.html`` of a score, train, demo or sweep output.

Rendered with Jinja2 from ``report.html.j2`` (package data of this package); every picture is
inline (a ``data:`` URI) and the page's few lines of JavaScript (sorting and filtering the
per-image table) are inline too, so the file opens anywhere, offline, and sends no request.

>>> write_report("scores/")      # scores/report.html
"""

from .build import REPORT_KINDS, report_kind, write_report

__all__ = ["REPORT_KINDS", "report_kind", "write_report"]
