"""The ``mbuild`` command: validate, build and release manifests; inspect/verify/diff bundles; select; devices."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mbuild import __version__
from mbuild.errors import MbuildError


def error_lines(e: Exception) -> str:
    """'error: ...' for each line of the message (a manifest's problems come one per line)."""
    return "\n".join(f"error: {line}" for line in str(e).splitlines() or [""])


def _manifest_paths(given: list[str]) -> list[Path]:
    if given:
        return [Path(p) for p in given]
    from mbuild.tasks import discover_manifests

    return discover_manifests(Path.cwd())


def cmd_validate(args) -> int:
    from mbuild.manifest import load_manifest

    paths = _manifest_paths(args.manifests)
    if not paths:
        print("error: no manifests given and none found in ./manifests", file=sys.stderr)
        return 2
    worst = 0
    for path in paths:
        try:
            m = load_manifest(path)
            _deep_checks(m)
        except MbuildError as e:
            print(error_lines(e), file=sys.stderr)
            worst = max(worst, e.exit_code)
            continue
        targets = ", ".join(f"{n} ({t.runtime}/{t.recipe})" for n, t in m.targets.items())
        print(f"ok: {os.path.relpath(path)}: {m.bundle_id}, {m.source.kind} source, targets: {targets}")
        from mbuild.bundle.selection import selection_warnings
        from mbuild.validate.budget import budget_warnings

        for warning in selection_warnings(m) + budget_warnings(m):
            print(f"warning: {warning}", file=sys.stderr)
    return worst


def _deep_checks(manifest) -> None:
    """What validate can check cheaply beyond the manifest: npz keys and sizes, the model's module and callable."""
    from mbuild.sources.data import check_npz

    for spec in manifest.data.values():
        if not spec.is_synthetic:
            check_npz(manifest, spec)
    if manifest.source.kind == "pytorch":
        from mbuild.sources.pytorch import probe_source

        probe_source(manifest)


def cmd_build(args) -> int:
    """Run doit for the given manifests (all under manifests/ by default)."""
    import importlib.util

    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    dodo = Path.cwd() / "dodo.py"
    if not dodo.exists():
        print("error: run 'mbuild build' from the project root (the folder holding dodo.py)", file=sys.stderr)
        return 2
    if args.manifests:
        os.environ["MBUILD_MANIFESTS"] = ",".join(str(Path(p).resolve()) for p in args.manifests)
    spec = importlib.util.spec_from_file_location("dodo", dodo)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["run"] + (["-n", str(args.jobs), "-P", "process"] if args.jobs > 1 else [])
    if args.shard or os.environ.get("MBUILD_SHARD"):  # a CI job's share of variant/check tasks (mbuild/cache)
        from mbuild.cache.cli import shard_argv

        argv += shard_argv(Path.cwd(), args.shard or os.environ["MBUILD_SHARD"]) or ["manifest"]
    try:
        return DoitMain(ModuleTaskLoader(module)).run(argv)
    finally:
        from mbuild.manifest import SNAPSHOT_PID_ENV, SNAPSHOTS_ENV

        os.environ.pop(SNAPSHOT_PID_ENV, None)  # later loads in this process are not part of that build
        os.environ.pop(SNAPSHOTS_ENV, None)


def _verified(path: str, args) -> dict:
    """bundle.json of a bundle that passed ``mbuild verify`` under the project's trust rules (what it proved: stderr)."""
    from mbuild.bundle.trust import verify_trusted

    verdict = verify_trusted(Path(path), key=getattr(args, "key", None),
                             require_signed=getattr(args, "require_signed", None))
    print(f"verified: {path}: {verdict.note}", file=sys.stderr)
    return verdict.doc


def _showing(path: str):
    """Turn a crash on odd but schema-valid bundle.json content into one line (the schema should have caught it)."""
    import contextlib

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as e:
            from mbuild.errors import BundleError

            raise BundleError(f"{path}: bundle.json holds content this command cannot show "
                              f"({type(e).__name__}: {str(e)[:120]})") from None
    return guard()


def _printable(text: str) -> str:
    """Bundle text for a terminal: control characters (ANSI escapes) and bidi overrides shown as '?'."""
    import re

    return re.sub("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", "?", text)


def cmd_inspect(args) -> int:
    from mbuild.bundle.inspect import format_bundle

    doc = _verified(args.bundle, args)
    if args.json:
        import json

        print(json.dumps(doc, indent=2, sort_keys=True, allow_nan=False))
        return 0
    with _showing(args.bundle):
        text = format_bundle(doc)
    print(_printable(text))
    return 0


def cmd_verify(args) -> int:
    from mbuild.bundle.trust import verify_trusted

    verdict = verify_trusted(Path(args.bundle), key=args.key, require_signed=args.require_signed)
    print(f"ok: {args.bundle}: {verdict.note}")
    return 0


def cmd_release(args) -> int:
    """Build through doit, verify, sign (--key or MBUILD_SIGNING_KEY) and record an immutable version."""
    from mbuild.release import describe, release_manifest

    result = release_manifest(args.manifest, args.key, jobs=args.jobs, unsigned=args.unsigned)
    print(describe(result, Path.cwd()))
    return 0


def cmd_diff(args) -> int:
    from mbuild.bundle.diff import diff_documents, format_diff

    old, new = _verified(args.old, args), _verified(args.new, args)
    with _showing(f"{args.old} or {args.new}"):
        d = diff_documents(old, new)
        text = format_diff(d) if not args.json else None
    if args.json:
        from mbuild.bundle.exports import embeddable_json

        sys.stdout.write(embeddable_json(d, sort_keys=True))
    else:
        print(_printable(text))
    return 0


def cmd_keygen(args) -> int:
    from mbuild.bundle.sign import generate_keypair, key_id, load_public_key

    private, public = generate_keypair(Path(args.private), Path(args.public) if args.public else None)
    print(f"wrote {private} (private, keep it secret) and {public} (public, for 'mbuild verify --key'); "
          f"key id {key_id(load_public_key(public))}")
    return 0


def cmd_select(args) -> int:
    from mbuild.bundle.select import device_properties, make_device_properties, select

    if args.device:
        from mbuild.devices import get_device

        props = device_properties(get_device(args.device), api_level=args.api, os_version=args.os)
    elif args.platform:
        props = make_device_properties(args.platform, os_version=args.os, api_level=args.api, soc=args.soc,
                                       ram_mb=args.ram_mb, has_ane_coreml=args.ane, has_gpu=args.gpu,
                                       nnapi=args.nnapi)
    else:
        print("error: give --device ID or --platform with the device's properties", file=sys.stderr)
        return 2
    from mbuild.bundle.select_view import selection_json, selection_table

    bundle = _verified(args.bundle, args)
    with _showing(args.bundle):
        sel = select(bundle, props)
        capacity = _capacity(bundle, sel.variant_id, args.device) if args.device else None
        if args.json:
            import json

            print(json.dumps(selection_json(sel, props, capacity), indent=2))
            return 0
        text = f"selected: {sel.variant_id}\n" + selection_table(bundle, sel, props)
        if args.device:
            text += "\n\n" + _capacity_text(capacity)
    print(_printable(text))
    return 0


def cmd_estimate(args) -> int:
    """The capacity estimate of a bundle's variants, or of a named workload, on one device, with its assumptions."""
    from mbuild.devices import get_device
    from mbuild.devices.calibration import load_calibration
    from mbuild.devices.capacity import describe, estimate

    device = get_device(args.device)
    if args.bundle:
        from mbuild.devices.capacity import estimate_variant

        print(f"{device.label}: capacity of {args.bundle} (estimates, not measurements)")
        for variant in _verified(args.bundle, args)["variants"]:
            est = estimate_variant(variant, [device]).get(device.id)
            reason = "" if est else " (its requirements exclude this device)"
            print(f"\n{variant['id']}{reason}")
            if est:
                print("  " + describe(est).replace("\n", "\n  "))
        return 0
    workloads = load_calibration()["workloads"]
    if args.workload not in workloads:
        print(f"error: unknown workload {args.workload!r}; known: {', '.join(workloads)}", file=sys.stderr)
        return 2
    w = workloads[args.workload]
    act = w["peak_activation_bytes"] * (0.5 if args.precision == "fp16" else 1.0)
    print(f"{device.label}: {w['description']}")
    for acc in args.accelerator or ["cpu", "gpu", "ane", "nnapi"]:
        if (acc == "ane" and device.platform != "ios") or (acc == "nnapi" and device.platform != "android"):
            continue
        est = estimate(w["flops"], device, acc, precision=args.precision, bytes_moved=w["weights_bytes"] + act)
        print(f"\n{acc}:\n  " + describe(est).replace("\n", "\n  "))
    return 0


def _capacity(bundle: dict, variant_id: str, device_id: str) -> dict | None:
    """The chosen variant's estimate on that device, recomputed with the current model and the bundle's assumptions."""
    from mbuild.devices import get_device
    from mbuild.devices.capacity import estimate_variant

    variant = next(v for v in bundle["variants"] if v["id"] == variant_id)
    stored = (variant.get("capacity") or {}).get(device_id) or {}
    a = stored.get("assumptions") or {}
    acc = stored.get("accelerator") or (variant.get("requirements") or {}).get("accelerator") or "cpu"
    assumptions = {k: a[k] for k in ("derating", "fps") if k in a}
    if a.get("efficiency") is not None:
        assumptions["efficiency"] = {acc: a["efficiency"]}
    return estimate_variant(variant, [get_device(device_id)], assumptions).get(device_id)


def _capacity_text(est: dict | None) -> str:
    from mbuild.devices.capacity import describe

    if not est:
        return "capacity estimate: none (the variant's requirements exclude this device)"
    return describe(est)


def cmd_export(args) -> int:
    """Platform-native selection files: Play device targeting XML, or a map keyed by Apple model identifier."""
    from mbuild.bundle.exports import apple_model_map_json, play_export
    from mbuild.devices import load_devices

    bundle = _verified(args.bundle, args)
    if args.kind == "play":
        with _showing(args.bundle):
            text, plan = play_export(bundle, load_devices(), args.min_sdk)
        for line in plan.approximations:
            print(f"approximate: {line}", file=sys.stderr)
        if not plan.exact and not args.allow_approximate:
            print(f"error: {args.bundle}: Play's device targeting cannot express {len(plan.approximations)} "
                  "selection rule(s) exactly (listed above); nothing written. Pass --allow-approximate to "
                  "write the XML anyway (the app must then run the selection at launch).", file=sys.stderr)
            return 1
    else:
        with _showing(args.bundle):
            text = apple_model_map_json(bundle, load_devices())
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_fleet(args) -> int:
    """Selection and capacity weighed by the users' device models: text, optional JSON, and an HTML report."""
    from mbuild.bundle.fleet import fleet_report, format_fleet, read_shares
    from mbuild.bundle.fleet_html import write_fleet_html
    from mbuild.bundle.verify import read_bundle_json
    from mbuild.devices import load_devices

    rep = fleet_report(read_bundle_json(Path(args.bundle)), read_shares(args.devices), load_devices())
    if args.json:
        import json

        print(json.dumps(rep, indent=2))
    else:
        print(format_fleet(rep))
    out = Path(args.output or Path(args.bundle).with_suffix("").as_posix() + ".fleet.html")
    write_fleet_html(rep, out)
    print(f"wrote {out}", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_devices(args) -> int:
    from mbuild.devices import load_devices
    from mbuild.devices.listing import devices_json, devices_table

    devices = load_devices()
    if args.json:
        import json

        print(json.dumps(devices_json(devices), indent=2))
    else:
        print(devices_table(devices))
    return 0


def _trust_options(p: argparse.ArgumentParser) -> None:
    """Every reading command verifies first, under the same trust rules as ``mbuild verify``."""
    p.add_argument("--key", help="trust only this Ed25519 public key (PEM) instead of the project's "
                                 "[tool.mbuild] trusted_keys; implies --require-signed")
    p.add_argument("--require-signed", action=argparse.BooleanOptionalAction, default=None,
                   help="fail unless a trusted key signed the bundle (default: on for dist/releases/, --key, "
                        "or [tool.mbuild] require_signed = true)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mbuild", description=__doc__)
    p.add_argument("--version", action="version", version=f"mbuild {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check manifests (schema, paths, targets) without building")
    v.add_argument("manifests", nargs="*")
    v.set_defaults(func=cmd_validate)
    b = sub.add_parser("build", help="build bundles with doit (all manifests by default)")
    b.add_argument("manifests", nargs="*")
    b.add_argument("-n", "--jobs", type=int, default=1)
    b.add_argument("--shard", metavar="I/N", help="build only shard I of N of the variant/check tasks (CI)")
    b.set_defaults(func=cmd_build)
    i = sub.add_parser("inspect", help="show a bundle's variants, sizes, quantization and validation")
    i.add_argument("bundle")
    i.add_argument("--json", action="store_true", help="print bundle.json (every variant, output and metric)")
    _trust_options(i)
    i.set_defaults(func=cmd_inspect)
    ve = sub.add_parser("verify", help="check a bundle's archive, checksums, schema and paths, and its signature "
                                       "against the project's trusted keys")
    ve.add_argument("bundle")
    _trust_options(ve)
    ve.set_defaults(func=cmd_verify)
    r = sub.add_parser("release", help="build, verify, sign and record one immutable version of a bundle")
    r.add_argument("manifest")
    r.add_argument("--key", help="Ed25519 private key (PEM) to sign with; default: $MBUILD_SIGNING_KEY. Its public key "
                              "must be in [tool.mbuild] trusted_keys")
    r.add_argument("--unsigned", action="store_true", help="release without a signature (verify then needs "
                                                           "--no-require-signed to read dist/releases/)")
    r.add_argument("-n", "--jobs", type=int, default=1)
    r.set_defaults(func=cmd_release)
    df = sub.add_parser("diff", help="what changed between two bundles: sizes, FLOPs, metrics, requirements")
    df.add_argument("old")
    df.add_argument("new")
    df.add_argument("--json", action="store_true", help="print the diff as JSON")
    _trust_options(df)
    df.set_defaults(func=cmd_diff)
    k = sub.add_parser("keygen", help="create an Ed25519 key pair for signing releases")
    k.add_argument("private", help="where to write the private key (PEM)")
    k.add_argument("--public", help="where to write the public key (default: PRIVATE stem + .pub.pem)")
    k.set_defaults(func=cmd_keygen)
    s = sub.add_parser("select", help="which variant a device loads, and why")
    s.add_argument("bundle")
    s.add_argument("--device", help="a device id from 'mbuild devices'")
    s.add_argument("--platform", choices=["ios", "android", "macos", "web", "linux", "windows"])
    s.add_argument("--os", help="iOS version, e.g. 17.5")
    s.add_argument("--api", type=int, help="Android API level")
    s.add_argument("--soc", help="SoC model, e.g. sm8550")
    s.add_argument("--ram-mb", type=int)
    s.add_argument("--ane", action=argparse.BooleanOptionalAction, default=None,
                   help="a Neural Engine Core ML can use")
    s.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=True)
    s.add_argument("--nnapi", action=argparse.BooleanOptionalAction, default=None)
    s.add_argument("--json", action="store_true", help="the choice, every rejection and the estimate as JSON")
    _trust_options(s)
    s.set_defaults(func=cmd_select)
    es = sub.add_parser("estimate", help="capacity estimate on one device (a bundle's variants or a named workload)")
    es.add_argument("device", help="a device id from 'mbuild devices'")
    es.add_argument("--bundle", help="estimate every variant of this .mbundle")
    es.add_argument("--workload", default="bench_mobilenet_v2",
                    help="a workload of mbuild/devices/calibration.yaml (default: bench_mobilenet_v2)")
    es.add_argument("--accelerator", action="append", choices=["cpu", "gpu", "ane", "nnapi"])
    es.add_argument("--precision", default="fp16", choices=["fp32", "fp16"])
    es.set_defaults(func=cmd_estimate)
    e = sub.add_parser("export", help="write Play device-targeting XML or an Apple model-identifier map")
    e.add_argument("kind", choices=["play", "apple"])
    e.add_argument("bundle")
    e.add_argument("-o", "--output")
    e.add_argument("--allow-approximate", action="store_true",
                   help="write Play XML even where Play cannot express a selection rule exactly")
    e.add_argument("--min-sdk", type=int, default=21,
                   help="the app's minSdkVersion: min_api at or below it always holds on Play (default 21)")
    _trust_options(e)
    e.set_defaults(func=cmd_export)
    f = sub.add_parser("fleet", help="which variant your users get and how fast, from a device-share table")
    f.add_argument("bundle")
    f.add_argument("--devices", required=True, help="CSV: device model name or identifier, share of users")
    f.add_argument("-o", "--output", help="HTML report path (default: BUNDLE without suffix + .fleet.html)")
    f.add_argument("--json", action="store_true", help="print the report as JSON")
    f.set_defaults(func=cmd_fleet)
    d = sub.add_parser("devices", help="list the device database")
    d.add_argument("--json", action="store_true", help="every device and figure with its source, as JSON")
    d.set_defaults(func=cmd_devices)
    from mbuild.cache.cli import add_cache_commands

    add_cache_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MbuildError as e:
        print(error_lines(e), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `mbuild devices | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
