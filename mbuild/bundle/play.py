"""Google Play device targeting derived from the bundle's selection rules, and Play's own matching replayed.

Play can see a device's RAM, model (brand + device), system features and, from API level 31, its SoC
(https://developer.android.com/google/play/device-targeting). It cannot see the Android API level, so
``min_api`` above the app's minSdkVersion, ``max_api``, ``accelerator: nnapi`` (NNAPI exists on API
27-34 only) and ``soc_deny`` have no Play form. Each Android-reachable variant becomes one device group:

* **exact** when every rule has a Play form: RAM -> ``ram-min-bytes``, ``soc_allow`` ->
  ``system-on-chip`` (exact only when the variant needs API >= 31, where devices report their SoC),
  ``accelerator: gpu``/``cpu`` -> no condition (select assumes a GPU on every Android device);
* **resolved** otherwise: the group lists the SoCs of the database devices that :func:`select` sends to
  the variant, each judged at its newest Android release. That agrees with select on the database but
  not beyond it, so the plan records an approximation and ``mbuild export play`` fails without
  ``--allow-approximate``.

:func:`play_variant_for` replays Play's rule (first group with a matching selector; no group -> the
automatic "other" group, which ships the fallback) so tests can compare it with :func:`select` device
by device.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from mbuild.bundle.select import NNAPI_MAX_API, device_properties, select
from mbuild.errors import BundleError

__all__ = ["PlaySelector", "PlayGroup", "PlayPlan", "play_plan", "play_variant_for", "soc_pair",
           "DEFAULT_MIN_SDK", "SOC_REPORTED_FROM_API"]

MIB = 1024 * 1024
DEFAULT_MIN_SDK = 21  # mbuild's default min_api for LiteRT targets (mbuild.targets.tflite.runtime.API_DEFAULTS)
SOC_REPORTED_FROM_API = 31  # Build.SOC_MODEL exists from Android 12; Play targets SoCs only there
# Build.SOC_MANUFACTURER spellings by SoC part-number prefix; write "Manufacturer:MODEL" to override.
SOC_MANUFACTURERS = (("sdm", "QTI"), ("sm", "QTI"), ("mt", "Mediatek"), ("gs", "Google"), ("zuma", "Google"),
                     ("s5e", "Samsung"), ("exynos", "Samsung"))


def soc_pair(entry: str) -> tuple[str, str]:
    """(manufacturer, model) for one SoC entry, e.g. 'sm8550' -> ('QTI', 'SM8550')."""
    if ":" in entry:
        manufacturer, model = (p.strip() for p in entry.split(":", 1))
        if manufacturer and model:
            return manufacturer, model.upper()
    low = entry.strip().lower()
    for prefix, manufacturer in SOC_MANUFACTURERS:
        if low.startswith(prefix):
            return manufacturer, low.upper()
    raise BundleError(f"SoC {entry!r}: cannot tell its Build.SOC_MANUFACTURER; write it as "
                      f"'Manufacturer:MODEL' (e.g. 'QTI:SM8550') in soc_allow, or fix soc_id in devices.yaml")


@dataclass(frozen=True)
class PlaySelector:
    """One ``config:device-selector``: its properties are ANDed; its SoCs are alternatives."""

    ram_min_bytes: int = 0
    socs: tuple[tuple[str, str], ...] = ()

    def matches(self, props: dict) -> bool:
        """Play's view: RAM (unknown RAM counts as enough, as in select) and the SoC from API 31."""
        ram = props.get("ram_mb")
        if ram is not None and float(ram) * MIB < self.ram_min_bytes:
            return False
        if not self.socs:
            return True
        api, soc = props.get("api_level"), props.get("soc")
        if api is None or int(api) < SOC_REPORTED_FROM_API or not soc:
            return False
        try:
            return soc_pair(soc) in self.socs
        except BundleError:
            return False

    def covers(self, other: PlaySelector) -> bool:
        """Every device ``other`` matches, this one matches too (so a later group under it is unreachable)."""
        return self.ram_min_bytes <= other.ram_min_bytes and (not self.socs or bool(other.socs)
                                                              and set(other.socs) <= set(self.socs))


@dataclass(frozen=True)
class PlayGroup:
    """One device group: the variant it ships, how it was derived, and what Play cannot express."""

    name: str
    variant: str
    selector: PlaySelector
    exact: bool
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlayPlan:
    """The groups in file order, what the 'other' group ships, and every approximation made."""

    groups: tuple[PlayGroup, ...]
    other: str
    approximations: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def exact(self) -> bool:
        return not self.approximations


def group_name(variant_id: str) -> str:
    """Play group names end up in folder suffixes (#group_<name>): keep letters, digits, underscores."""
    return re.sub(r"[^A-Za-z0-9_]", "_", variant_id)


def _inexpressible(req: dict, min_sdk: int) -> list[str]:
    """The rules of one variant that Play's device targeting has no form for."""
    out = []
    if req.get("min_api") is not None and int(req["min_api"]) > min_sdk:
        out.append(f"min_api {req['min_api']} (above minSdkVersion {min_sdk}; Play cannot see the API level)")
    if req.get("max_api") is not None:
        out.append(f"max_api {req['max_api']} (Play cannot see the API level)")
    if req.get("accelerator") == "nnapi" and req.get("max_api") is None:
        out.append(f"accelerator nnapi (NNAPI exists on API 27-{NNAPI_MAX_API}; Play cannot see the API level)")
    if req.get("soc_deny"):
        out.append(f"soc_deny {sorted(req['soc_deny'])} (Play can exclude device models, not SoCs)")
    if req.get("soc_allow") and int(req.get("min_api") or 0) < SOC_REPORTED_FROM_API:
        out.append(f"soc_allow below API {SOC_REPORTED_FROM_API} (devices report their SoC only from Android 12)")
    return out


def _candidates(bundle: dict):
    """Variants an Android device can get, in selection order (absent and failed ones skipped)."""
    variants = {v.get("id"): v for v in bundle.get("variants") or [] if isinstance(v, dict)}
    for vid in (bundle.get("selection") or {}).get("order") or []:
        variant = variants.get(vid)
        if variant is None or (variant.get("validation") or {}).get("status") == "failed":
            continue
        req = variant.get("requirements") or {}
        if (req.get("platform") or "any") not in ("android", "any") or req.get("accelerator") == "ane":
            continue
        yield variant


def play_plan(bundle: dict, devices, min_sdk: int = DEFAULT_MIN_SDK) -> PlayPlan:
    """Device groups for every Android-reachable variant, exact where Play can say it, resolved otherwise."""
    fallback = (bundle.get("selection") or {}).get("fallback")
    if not fallback:
        raise BundleError("bundle has no selection.fallback; Play's 'other' group would have nothing to ship")
    android = [d for d in sorted(devices, key=lambda d: d.id) if d.platform == "android"]
    chosen = {d.id: select(bundle, device_properties(d)).variant_id for d in android}
    groups: list[PlayGroup] = []
    other = fallback
    approximations: list[str] = []
    skipped: list[str] = []
    for variant in _candidates(bundle):
        vid = variant["id"]
        req = variant.get("requirements") or {}
        ram = int(float(req.get("ram_mb_min") or 0) * MIB)
        missing = _inexpressible(req, min_sdk)
        notes: list[str] = []
        if not missing:
            socs = tuple(sorted({soc_pair(str(s)) for s in req.get("soc_allow") or []}))
            selector = PlaySelector(ram, socs)
            notes.append("exact: every rule of the variant has a Play form")
        else:
            mine = [d for d in android if chosen[d.id] == vid]
            reachable = [d for d in mine if (d.value("soc_id") and _newest_api(d) is not None
                                             and _newest_api(d) >= SOC_REPORTED_FROM_API)]
            unreachable = [d.id for d in mine if d not in reachable]
            if not reachable:
                skipped.append(f"{vid}: Play cannot express {'; '.join(missing)}, and no database device it "
                               f"could target by SoC gets it" + (f" ({', '.join(unreachable)} cannot be "
                                                                  f"targeted by SoC)" if unreachable else ""))
                approximations.append(skipped[-1])
                continue
            socs = tuple(sorted({soc_pair(str(d.value("soc_id"))) for d in reachable}))
            selector = PlaySelector(ram, socs)
            ids = ", ".join(d.id for d in reachable)
            notes.append(f"resolved against the device database: Play cannot express {'; '.join(missing)}; "
                         f"the group lists the SoCs of the database devices select sends here ({ids}), each "
                         f"at its newest Android release; other devices with these SoCs get it too")
            approximations.append(f"{vid}: Play cannot express {'; '.join(missing)}; group resolved against "
                                  f"the device database ({len(reachable)} device(s))")
            if unreachable:
                approximations.append(f"{vid}: database devices {', '.join(unreachable)} get it from select but "
                                      f"Play cannot target them (API < {SOC_REPORTED_FROM_API} or SoC unknown)")
        shadow = next((g.name for g in groups if g.selector.covers(selector)), None)
        if shadow:
            skipped.append(f"{vid}: every device it would hold matches group {shadow!r} first; left out")
            continue
        if not missing and selector == PlaySelector():
            other = vid  # matches every device: it is what Play's 'other' group ships; nothing after is reachable
            break
        groups.append(PlayGroup(group_name(vid), vid, selector, exact=not missing, notes=tuple(notes)))
    plan = PlayPlan(tuple(groups), other, (), tuple(skipped))
    unknown_api = [d.id for d in android if _newest_api(d) is None]
    if unknown_api:
        skipped.append(f"not checked against select: {', '.join(unknown_api)} (API level unknown in the device "
                       f"database, so select cannot judge API rules for it; Play serves it at >= minSdkVersion)")
    disagreements = [f"{d.id}: select gives {chosen[d.id]!r}, Play would give {play_variant_for(plan, props)!r}"
                     for d in android if d.id not in unknown_api
                     for props in [device_properties(d)] if play_variant_for(plan, props) != chosen[d.id]]
    return PlayPlan(plan.groups, other, tuple(approximations + disagreements), tuple(skipped))


def _newest_api(device) -> int | None:
    """The API level select judges a database device at (its newest known release)."""
    api = device.value("api_max") or device.value("api_min")
    return int(api) if api is not None else None


def play_variant_for(plan: PlayPlan, props: dict) -> str:
    """The variant Play delivers to a device: the first group with a matching selector, else 'other'."""
    for group in plan.groups:
        if group.selector.matches(props):
            return group.variant
    return plan.other
