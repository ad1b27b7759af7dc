"""Bundles: the deterministic archive, its verification, inspection and the reference variant resolver.

``mbuild.bundle.select(bundle, device_props)`` is the executable reference of the selection rules
an app implements; ``verify_bundle(path)`` checks a bundle without trusting it.
"""
from mbuild.bundle.select import Selection, device_properties, make_device_properties, select  # noqa: F401
from mbuild.bundle.verify import read_bundle_json, verify_bundle  # noqa: F401

__all__ = ["select", "Selection", "device_properties", "make_device_properties", "verify_bundle", "read_bundle_json"]
