"""The HTML report: one self-contained page (inline SVG, no network) for ``--report out.html``.

:mod:`~onnxprune.html.svg` draws charts, :mod:`~onnxprune.html.figures` holds the per-pass figures,
:mod:`~onnxprune.html.profile` measures latency by op type, :mod:`~onnxprune.html.page` assembles the
page. :func:`onnxprune.report.write_report` writes it for a ``.html`` path.
"""

from __future__ import annotations

from onnxprune.html.page import render_page
from onnxprune.html.profile import op_latency

__all__ = ["op_latency", "render_page"]
