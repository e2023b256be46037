"""The data audit: copies, leakage, likely label errors, outliers and class balance of a labelled
data set, from a backbone's cached features (``headstart audit``, ``fit --audit``, ``hs.audit``)."""

from .checks import NEAR_DUPLICATE_THRESHOLD, audit, near_duplicate_threshold
from .findings import DROP_KINDS, KINDS, Audit, Finding
from .fitting import (
           check_drop_kinds,
           drop_flagged,
           split_leakage,
           split_leakage_message,
           warn_split_leakage,
)
from .output import AUDIT_FILE, write_audit

__all__ = [
           "AUDIT_FILE",
           "DROP_KINDS",
           "KINDS",
           "NEAR_DUPLICATE_THRESHOLD",
           "Audit",
           "Finding",
           "audit",
           "check_drop_kinds",
           "drop_flagged",
           "near_duplicate_threshold",
           "split_leakage",
           "split_leakage_message",
           "warn_split_leakage",
           "write_audit",
]
