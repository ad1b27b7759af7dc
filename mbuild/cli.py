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
    try:
        return DoitMain(ModuleTaskLoader(module)).run(argv)
    finally:
        from mbuild.manifest import SNAPSHOT_PID_ENV, SNAPSHOTS_ENV

        os.environ.pop(SNAPSHOT_PID_ENV, None)  # later loads in this process are not part of that build
        os.environ.pop(SNAPSHOTS_ENV, None)


def cmd_inspect(args) -> int:
    from mbuild.bundle.inspect import format_bundle
    from mbuild.bundle.verify import read_bundle_json

    doc = read_bundle_json(Path(args.bundle))
    if args.json:
        import json

        print(json.dumps(doc, indent=2, sort_keys=True, allow_nan=False))
        return 0
    print(format_bundle(doc))
    return 0


def cmd_verify(args) -> int:
    from mbuild.bundle.verify import verify_bundle

    doc = verify_bundle(Path(args.bundle))
    if args.key:
        from mbuild.bundle.sign import verify_signature

        verify_signature(Path(args.bundle), Path(args.key))
        sig_note = ", signature valid"
    else:
        from mbuild.bundle.sign import signature_info

        sig = signature_info(Path(args.bundle))
        sig_note = f", signed by {sig['key-id']} (not checked: pass --key PUB.pem)" if sig else ", unsigned"
    print(f"ok: {args.bundle}: {doc['name']} {doc['version']}, {len(doc['variants'])} variant(s), "
          f"checksums and schema valid{sig_note}")
    return 0


def cmd_release(args) -> int:
    """Build through doit, verify, sign (--key or MBUILD_SIGNING_KEY) and record an immutable version."""
    from mbuild.release import describe, release_manifest

    result = release_manifest(args.manifest, args.key, jobs=args.jobs)
    print(describe(result, Path.cwd()))
    return 0


def cmd_diff(args) -> int:
    from mbuild.bundle.diff import diff_bundles, format_diff

    d = diff_bundles(Path(args.old), Path(args.new))
    if args.json:
        import json

        print(json.dumps(d, indent=2, sort_keys=True))
    else:
        print(format_diff(d))
    return 0


def cmd_keygen(args) -> int:
    from mbuild.bundle.sign import generate_keypair, key_id, load_public_key

    private, public = generate_keypair(Path(args.private), Path(args.public) if args.public else None)
    print(f"wrote {private} (private, keep it secret) and {public} (public, for 'mbuild verify --key'); "
          f"key id {key_id(load_public_key(public))}")
    return 0


def cmd_select(args) -> int:
    from mbuild.bundle.select import device_properties, make_device_properties, select_in_bundle_file

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
    sel = select_in_bundle_file(Path(args.bundle), props)
    print(f"selected: {sel.variant_id}")
    print(sel.explanation)
    for vid, reason in sel.reasons_rejected:
        print(f"  rejected {vid}: {reason}")
    if args.device:
        print(_capacity_line(Path(args.bundle), sel.variant_id, args.device))
    return 0


def _capacity_line(bundle_path: Path, variant_id: str, device_id: str) -> str:
    """The back-of-the-envelope estimate for the chosen variant on that device, with its assumptions."""
    from mbuild.bundle.verify import read_bundle_json

    variant = next(v for v in read_bundle_json(bundle_path)["variants"] if v["id"] == variant_id)
    est = (variant.get("capacity") or {}).get(device_id)
    if not est:
        return "capacity estimate: none for this device in the bundle"
    a = est["assumptions"]
    basis = f"{est['accelerator']} peak {est['peak_flops_per_s'] / 1e9:,.0f} GFLOP/s" if est.get("peak_flops_per_s") else ""
    if est.get("latency_ms") is None:
        return f"capacity estimate: unknown ({est.get('reason')})"
    return (f"capacity estimate (an estimate, not a measurement): {est['latency_ms']:.3f} ms, {est['fps']:,.0f} fps, "
            f"{est['networks_per_frame']} such networks per {1000 / a['fps']:.1f} ms frame; {basis}, "
            f"efficiency {a['efficiency']}, derating {a['derating']} ({est['formula']})")


def cmd_export(args) -> int:
    """Platform-native selection files: Play device targeting XML, or a map keyed by Apple model identifier."""
    from mbuild.bundle.exports import apple_model_map_json, play_device_targeting_xml
    from mbuild.bundle.verify import read_bundle_json
    from mbuild.devices import load_devices

    bundle = read_bundle_json(Path(args.bundle))
    text = play_device_targeting_xml(bundle) if args.kind == "play" else apple_model_map_json(bundle, load_devices())
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_devices(args) -> int:
    from mbuild.devices import load_devices

    rows = [("id", "platform", "chip", "year", "RAM MB", "OS/API", "ANE (Core ML)", "NNAPI")]
    for d in load_devices():
        osr = (f"iOS {d.value('os_min')}-{d.value('os_max')}" if d.platform == "ios"
               else f"API {d.value('api_min')}-{d.value('api_max')}")
        ane = d.value("ane_present")
        usable = "yes" if d.value("ane_usable_by_coreml") else "present, not usable"
        ane_s = "-" if d.platform != "ios" else ("no" if not ane else usable)
        rows.append((d.id, d.platform, str(d.value("chip")), str(d.value("year")), str(d.value("ram_mb")), osr, ane_s,
                     "-" if d.platform != "android" else str(d.value("nnapi_available"))))
    print(_table(rows))
    return 0


def _table(rows) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


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
    b.set_defaults(func=cmd_build)
    i = sub.add_parser("inspect", help="show a bundle's variants, sizes, quantization and validation")
    i.add_argument("bundle")
    i.add_argument("--json", action="store_true", help="print bundle.json (every variant, output and metric)")
    i.set_defaults(func=cmd_inspect)
    ve = sub.add_parser("verify", help="check a bundle's schema, checksums and paths (and signature)")
    ve.add_argument("bundle")
    ve.add_argument("--key", help="Ed25519 public key (PEM) to check the signature with")
    ve.set_defaults(func=cmd_verify)
    r = sub.add_parser("release", help="build, verify, sign and record one immutable version of a bundle")
    r.add_argument("manifest")
    r.add_argument("--key", help="Ed25519 private key (PEM) to sign with; default: $MBUILD_SIGNING_KEY, else unsigned")
    r.add_argument("-n", "--jobs", type=int, default=1)
    r.set_defaults(func=cmd_release)
    df = sub.add_parser("diff", help="what changed between two bundles: sizes, FLOPs, metrics, requirements")
    df.add_argument("old")
    df.add_argument("new")
    df.add_argument("--json", action="store_true", help="print the diff as JSON")
    df.set_defaults(func=cmd_diff)
    k = sub.add_parser("keygen", help="create an Ed25519 key pair for signing releases")
    k.add_argument("private", help="where to write the private key (PEM)")
    k.add_argument("--public", help="where to write the public key (default: PRIVATE stem + .pub.pem)")
    k.set_defaults(func=cmd_keygen)
    s = sub.add_parser("select", help="which variant a device loads, and why")
    s.add_argument("bundle")
    s.add_argument("--device", help="a device id from 'mbuild devices'")
    s.add_argument("--platform", choices=["ios", "android", "macos", "linux", "windows"])
    s.add_argument("--os", help="iOS version, e.g. 17.5")
    s.add_argument("--api", type=int, help="Android API level")
    s.add_argument("--soc", help="SoC model, e.g. sm8550")
    s.add_argument("--ram-mb", type=int)
    s.add_argument("--ane", action=argparse.BooleanOptionalAction, default=None,
                   help="a Neural Engine Core ML can use")
    s.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=True)
    s.add_argument("--nnapi", action=argparse.BooleanOptionalAction, default=None)
    s.set_defaults(func=cmd_select)
    e = sub.add_parser("export", help="write Play device-targeting XML or an Apple model-identifier map")
    e.add_argument("kind", choices=["play", "apple"])
    e.add_argument("bundle")
    e.add_argument("-o", "--output")
    e.set_defaults(func=cmd_export)
    d = sub.add_parser("devices", help="list the device database")
    d.set_defaults(func=cmd_devices)
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
