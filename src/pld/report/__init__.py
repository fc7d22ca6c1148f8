"""Self-contained HTML + Markdown report of a run (plots embedded as PNG data URIs)."""

from pld.report.build import build_report

__all__ = ["build_report"]
