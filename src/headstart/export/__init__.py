"""Exporting a run as a deployable bundle (ONNX graph, input contract, labels, manifest), checked
against the run before it is written; :mod:`headstart.runtime` predicts with it without torch."""

from .bundle import (
                     FORMATS,
                     QUANTIZATIONS,
                     TOLERANCE,
                     ExportResult,
                     bundle_contract,
                     check_bundle_dir,
                     check_parity,
                     export_bundle,
)

__all__ = ["ExportResult", "export_bundle", "check_bundle_dir", "check_parity", "bundle_contract", "FORMATS",
           "QUANTIZATIONS", "TOLERANCE"]
