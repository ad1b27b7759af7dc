"""Numeric validation: metrics between a variant's outputs and the fp32 reference, and tolerance gates."""
from mbuild.validate.gates import check_tolerance
from mbuild.validate.metrics import compare_outputs

__all__ = ["compare_outputs", "check_tolerance"]
