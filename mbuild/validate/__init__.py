"""Validation: every output measured as what it is (tensor, per-part and task metrics) and gated by tolerances."""
from mbuild.validate.compare import compare_outputs
from mbuild.validate.gates import check_tolerance

__all__ = ["compare_outputs", "check_tolerance"]
