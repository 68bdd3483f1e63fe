"""Exercise checks: each prints ✅, "not attempted yet", or a diagnosis of the likely bug."""

from ._core import Case, CheckResult, run_check
from .self_attention import check_permutation_check, check_self_attention, check_softmax

__all__ = [
    "Case",
    "CheckResult",
    "check_permutation_check",
    "check_self_attention",
    "check_softmax",
    "run_check",
]
