"""Plots (matplotlib) and a self-contained HTML report of a run, a comparison or a search."""

from .html import build_report, read_documents, write_report

__all__ = ["build_report", "read_documents", "write_report"]
