"""Reference resolver: which variant of a bundle a device loads, and why the earlier ones did not fit.

Apps implement :data:`SELECTION_ALGORITHM` natively; this module is the executable reference that
``mbuild select``, the Apple model map and the Play device-targeting export all share.

Device properties (a plain dict, so a CLI can build one from flags)::

    {"platform": "ios"|"android"|<other>, "os_version": "17.5" (iOS), "api_level": 34 (Android),
     "soc": "sm8550", "ram_mb": 8192, "has_ane_coreml": bool, "has_gpu": bool, "nnapi": bool,
     "name": "iPhone 7", "chip": "Apple A10 Fusion", "has_ane": bool}   # last three: messages only

A property that is missing or None is unknown; a requirement that reads an unknown property is not met.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbuild.errors import BundleError

__all__ = [
    "SELECTION_ALGORITHM", "REQUIREMENT_KEYS", "NNAPI_MIN_API", "NNAPI_MAX_API", "Selection",
    "select", "select_in_bundle_file", "check_requirements", "device_properties", "make_device_properties",
    "parse_version",
]

NNAPI_MIN_API = 27  # Android 8.1 introduced NNAPI
NNAPI_MAX_API = 34  # deprecated from Android 15 (API 35)
REQUIREMENT_KEYS = ("platform", "min_os", "max_os", "min_api", "max_api", "accelerator", "ram_mb_min",
                    "soc_allow", "soc_deny")
ACCELERATORS = ("ane", "gpu", "nnapi", "cpu", "any")  # any: uses what the device has (Core ML compute_units all)

SELECTION_ALGORITHM = """\
1. Gather the device's properties: platform ("ios", "android" or anything else), iOS version \
(e.g. "17.5") or Android API level (e.g. 34), SoC model in lower case (Build.SOC_MODEL, e.g. "sm8550"), \
RAM in MB, whether Core ML can use the Neural Engine (A12 or newer), whether a GPU is present, and \
whether NNAPI is usable (true only on API levels 27 to 34: NNAPI is deprecated from Android 15, API 35).
2. Walk selection.order from first to last. Take the variant with that id; skip it if it is absent or \
its validation.status is "failed".
3. The variant matches when every requirement present holds: platform is "any" or equals the device \
platform; min_os <= iOS version <= max_os (compare dotted versions number by number, a missing part \
counts as 0); min_api <= API level <= max_api (integers); accelerator "ane" needs the Neural Engine \
usable by Core ML, "gpu" needs a GPU, "nnapi" needs NNAPI usable on the device's current API level, \
"cpu" and "any" (Core ML compute_units all: whatever the device has) always hold; RAM in MB >= ram_mb_min; \
the SoC is in soc_allow when soc_allow is non-empty; \
the SoC is not in soc_deny. A requirement whose device property is unknown does not hold, except \
RAM: an unknown RAM size is assumed sufficient. A null requirement always holds.
4. The first matching variant wins: load its file.
5. If none matched, load selection.fallback: it always matches (a CPU variant for platform "any")."""


@dataclass(frozen=True)
class Selection:
    """The chosen variant, why every earlier candidate was rejected, and a one-line explanation."""

    variant_id: str
    reasons_rejected: list[tuple[str, str]] = field(default_factory=list)
    explanation: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for ``mbuild select --json`` and reports."""
        return {"variant": self.variant_id, "explanation": self.explanation,
                "rejected": [{"variant": v, "reason": r} for v, r in self.reasons_rejected]}

    def to_text(self) -> str:
        """Human-readable answer: the choice, then one line per rejected variant."""
        lines = [self.explanation]
        lines += [f"  rejected {v}: {r}" for v, r in self.reasons_rejected]
        return "\n".join(lines)


def parse_version(text: Any) -> tuple[int, ...]:
    """Dotted version -> tuple of ints so "15" < "15.4" < "16.0" compare numerically."""
    parts = str(text).strip().split(".")
    try:
        nums = [int(p) for p in parts]
    except ValueError as e:
        raise BundleError(f"{text!r} is not a version like '16.0'") from e
    while len(nums) > 1 and nums[-1] == 0:
        nums.pop()
    return tuple(nums)


def _device_label(props: dict) -> str:
    """How messages name the device: 'iPhone 7 (Apple A10 Fusion)' or 'the device'."""
    name, chip = props.get("name"), props.get("chip")
    if name and chip:
        return f"{name} ({chip})"
    return name or "the device"


def _check_os(req: dict, props: dict) -> list[str]:
    """iOS version bounds; only consulted when the variant states them."""
    out: list[str] = []
    lo, hi = req.get("min_os"), req.get("max_os")
    if lo is None and hi is None:
        return out
    have = props.get("os_version")
    if have is None:
        bound = f">= {lo}" if lo is not None else f"<= {hi}"
        return [f"needs iOS {bound}; the device's iOS version is unknown"]
    if lo is not None and parse_version(have) < parse_version(lo):
        out.append(f"needs iOS >= {lo}; device runs iOS {have}")
    if hi is not None and parse_version(have) > parse_version(hi):
        out.append(f"needs iOS <= {hi}; device runs iOS {have}")
    return out


def _check_api(req: dict, props: dict) -> list[str]:
    """Android API bounds; the NNAPI deprecation is named when it is the reason for max_api."""
    out: list[str] = []
    lo, hi = req.get("min_api"), req.get("max_api")
    if lo is None and hi is None:
        return out
    have = props.get("api_level")
    if have is None:
        bound = f">= {lo}" if lo is not None else f"<= {hi}"
        return [f"needs Android API {bound}; the device's API level is unknown"]
    if lo is not None and int(have) < int(lo):
        out.append(f"needs Android API >= {lo}; device runs API {have}")
    if hi is not None and int(have) > int(hi):
        nnapi_bound = req.get("accelerator") == "nnapi" and int(hi) <= NNAPI_MAX_API
        why = " (NNAPI deprecated from Android 15)" if nnapi_bound else ""
        out.append(f"needs Android API <= {hi}{why}; device runs API {have}")
    return out


def _check_accelerator(req: dict, props: dict, api_reasons: bool) -> list[str]:
    """Accelerator presence; for NNAPI an API-level reason already given is not repeated."""
    acc = req.get("accelerator")
    if acc in (None, "cpu", "any"):
        return []
    label = _device_label(props)
    if acc == "ane":
        if props.get("has_ane_coreml"):
            return []
        if props.get("has_ane_coreml") is None and props.get("platform") == "ios":
            return ["needs the Neural Engine usable by Core ML; unknown whether the device has one"]
        if props.get("has_ane"):
            return [f"needs the Neural Engine usable by Core ML; {label} has a Neural Engine that Core ML cannot use"]
        return [f"needs the Neural Engine usable by Core ML; {label} has none"]
    if acc == "gpu":
        return [] if props.get("has_gpu") else [f"needs a GPU; {label} has none known"]
    if acc == "nnapi":
        if props.get("nnapi"):
            return []
        if api_reasons:
            return []
        api = props.get("api_level")
        if api is None:
            return ["needs NNAPI (Android API 27-34); the device's API level is unknown"]
        if int(api) > NNAPI_MAX_API:
            return [f"needs NNAPI, deprecated from Android 15 (API 35); device runs API {api}"]
        if int(api) < NNAPI_MIN_API:
            return [f"needs NNAPI, introduced in Android 8.1 (API 27); device runs API {api}"]
        return [f"needs NNAPI; {label} does not offer it"]
    raise BundleError(f"unknown accelerator {acc!r} in requirements; expected one of {ACCELERATORS}")


def check_requirements(requirements: dict | None, props: dict) -> list[str]:
    """Every reason the device fails ``requirements``; an empty list means the variant fits."""
    req = requirements or {}
    reasons: list[str] = []
    platform = req.get("platform") or "any"
    if platform != "any" and props.get("platform") != platform:
        have = props.get("platform") or "unknown"
        return [f"built for {platform}; device platform is {have}"]
    reasons += _check_os(req, props)
    api_reasons = _check_api(req, props)
    reasons += api_reasons
    reasons += _check_accelerator(req, props, bool(api_reasons))
    need_ram = req.get("ram_mb_min")
    if need_ram:
        have_ram = props.get("ram_mb")
        # Unknown RAM is not held against a variant: an app always knows its RAM, and the database
        # leaves unknown figures null rather than guess; only a known shortfall rejects.
        if have_ram is not None and float(have_ram) < float(need_ram):
            reasons.append(f"needs >= {need_ram} MB RAM; device has {have_ram} MB")
    soc = (props.get("soc") or "").lower() or None
    allow = [str(s).lower() for s in (req.get("soc_allow") or [])]
    deny = [str(s).lower() for s in (req.get("soc_deny") or [])]
    if allow and soc not in allow:
        reasons.append(f"limited to SoCs {', '.join(allow)}; device SoC is {soc or 'unknown'}")
    if soc and soc in deny:
        reasons.append(f"excluded on SoC {soc}")
    return reasons


def select(bundle: dict, device_props: dict) -> Selection:
    """Walk ``selection.order`` and return the first variant whose requirements the device meets."""
    sel = bundle.get("selection") or {}
    order = list(sel.get("order") or [])
    fallback = sel.get("fallback")
    variants = {v.get("id"): v for v in bundle.get("variants") or [] if isinstance(v, dict)}
    if not fallback or fallback not in variants:
        raise BundleError(f"bundle has no usable selection.fallback (got {fallback!r}); it must name a variant")
    rejected: list[tuple[str, str]] = []
    label = _device_label(device_props)
    for vid in order:
        variant = variants.get(vid)
        if variant is None:
            rejected.append((vid, "listed in selection.order but absent from the bundle's variants"))
            continue
        if (variant.get("validation") or {}).get("status") == "failed":
            rejected.append((vid, "failed validation in the build"))
            continue
        reasons = check_requirements(variant.get("requirements"), device_props)
        if not reasons:
            before = f" (rejected before it: {', '.join(v for v, _ in rejected)})" if rejected else ""
            return Selection(vid, rejected, f"{label} gets {vid!r}: the first variant in selection.order "
                                            f"whose requirements it meets{before}.")
        rejected.append((vid, "; ".join(reasons)))
    return Selection(fallback, rejected, f"{label} gets the fallback {fallback!r}: no variant in "
                                         f"selection.order matched, and the fallback always does.")


def make_device_properties(platform: str, *, os_version: str | None = None, api_level: int | None = None,
                           soc: str | None = None, ram_mb: float | None = None, has_ane_coreml: bool | None = None,
                           has_gpu: bool | None = True, nnapi: bool | None = None, name: str | None = None,
                           chip: str | None = None, has_ane: bool | None = None) -> dict:
    """Device properties from explicit values (``mbuild select --platform android --api 33 ...``).

    ``nnapi`` defaults from the API level (27..34) on Android; ``has_ane_coreml`` defaults to False
    off iOS and stays unknown on iOS unless given.
    """
    platform = platform.lower()
    if nnapi is None:
        nnapi = platform == "android" and api_level is not None and NNAPI_MIN_API <= int(api_level) <= NNAPI_MAX_API
    if has_ane_coreml is None and platform != "ios":
        has_ane_coreml = False
    props = {"platform": platform, "os_version": os_version, "api_level": api_level,
             "soc": soc.lower() if soc else None, "ram_mb": ram_mb, "has_ane_coreml": has_ane_coreml,
             "has_gpu": has_gpu, "nnapi": bool(nnapi), "name": name, "chip": chip, "has_ane": has_ane}
    return props


def device_properties(device, api_level: int | None = None, os_version: str | None = None) -> dict:
    """Device properties for a database device; the OS defaults to the newest the database knows."""
    if device.platform == "ios":
        os_version = os_version if os_version is not None else device.value("os_max") or device.value("os_min")
        api_level = None
    else:
        api_level = api_level if api_level is not None else (device.value("api_max") or device.value("api_min"))
        os_version = None
    soc = device.value("soc_id") if device.platform == "android" else None
    nnapi_known = device.value("nnapi_available")
    nnapi = (device.platform == "android" and api_level is not None and nnapi_known is not False
             and NNAPI_MIN_API <= int(api_level) <= NNAPI_MAX_API)
    has_ane, has_ane_coreml = False, False
    if device.platform == "ios":
        has_ane = device.value("ane_present")
        usable = device.value("ane_usable_by_coreml")
        has_ane_coreml = None if has_ane is None or (has_ane and usable is None) else bool(has_ane and usable)
    return make_device_properties(device.platform, os_version=os_version, api_level=api_level, soc=soc,
                                  ram_mb=device.value("ram_mb"), has_ane_coreml=has_ane_coreml, has_gpu=True,
                                  nnapi=nnapi, name=device.name, chip=device.value("chip"), has_ane=has_ane)


def select_in_bundle_file(path: str | Path, device_props: dict) -> Selection:
    """Verify a .mbundle (:func:`mbuild.bundle.verify.verify_bundle`) and resolve the variant for ``device_props``."""
    from mbuild.bundle.verify import verify_bundle

    return select(verify_bundle(Path(path)), device_props)
