"""PyTorch sources: import the model callable, load a state dict safely, run it, export ONNX."""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import io
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mbuild.errors import BuildError, ManifestError

if TYPE_CHECKING:  # pragma: no cover
    from mbuild.manifest.model import Manifest

ONNX_OPSET = 17


def _torch():
    try:
        import torch
    except ImportError:
        from mbuild.errors import MissingDependencyError

        raise MissingDependencyError("torch", "pytorch", "A PyTorch source") from None
    return torch


def load(manifest: "Manifest"):
    """The source nn.Module in eval mode with its weights loaded (weights_only=True)."""
    torch = _torch()
    src = manifest.source
    factory = _import_callable(manifest)
    try:
        model = factory(**src.kwargs)
    except Exception as e:  # user code
        raise BuildError(f"calling {src.model} failed: {type(e).__name__}: {e}") from e
    if not isinstance(model, torch.nn.Module):
        raise ManifestError(f"{src.model} returned {type(model).__name__}, not a torch.nn.Module",
                            manifest.positions.of(("source", "pytorch", "model")), "source.pytorch.model")
    if src.weights is not None:
        _load_weights(manifest, model, torch)
    return model.eval()


def _import_callable(manifest: "Manifest"):
    """The class or function the manifest names; it must be defined in the project file (or allowed module) named."""
    src = manifest.source
    loc = manifest.positions.of(("source", "pytorch", "model"))
    module, module_name, allowed = _import_module(manifest)
    attr = src.model.rpartition(":")[2]
    try:
        return resolve_callable(module, module_name, attr, allowed, _shown(manifest))
    except LookupError as e:
        raise ManifestError(str(e.args[0]), loc, "source.pytorch.model") from None


def _shown(manifest: "Manifest") -> str:
    src = manifest.source
    return manifest.rel(src.model_path) if src.model_path is not None else src.model.rpartition(":")[0]


def _import_module(manifest: "Manifest"):
    """(module, the name it is registered under, the allowed package prefix or None for a project file)."""
    src = manifest.source
    loc = manifest.positions.of(("source", "pytorch", "model"))
    target = src.model.rpartition(":")[0]
    if src.model_path is None:
        try:
            return importlib.import_module(target), target, target
        except Exception as e:  # noqa: BLE001 - an allowed installed module that does not import
            raise ManifestError(f"cannot import module {target!r}: {type(e).__name__}: {e}", loc,
                                "source.pytorch.model") from None
    # named from the root-relative path: converters copy module names into tensor names
    name = f"mbuild_user_{hashlib.sha256(manifest.rel(src.model_path).encode()).hexdigest()[:16]}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, src.model_path)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(src.model_path.parent))
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            raise BuildError(f"importing {manifest.rel(src.model_path)} failed: {type(e).__name__}: {e}") from e
        finally:
            sys.path.remove(str(src.model_path.parent))
        sys.modules[name] = module
    return module, name, None


def resolve_callable(module, module_name: str, attr: str, allowed: str | None, shown: str):
    """``attr`` in ``module`` when it is a class or function defined there (or in the allowed package).

    A name the module merely imports (``os.system`` re-exported by a model file, say) is refused:
    the manifest may only start code the project wrote or explicitly trusts.
    """
    import inspect

    from mbuild.manifest._schema import suggest

    obj = module
    walked = []
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = [n for n in dir(obj) if not n.startswith("_")]
            where = shown if not walked else f"{'.'.join(walked)} in {shown}"
            raise LookupError(f"{where} has no {part!r}{suggest(part, names)}") from None
        walked.append(part)
    func = getattr(obj, "__func__", obj)
    if not (inspect.isclass(obj) or inspect.isfunction(func)):
        raise LookupError(f"{attr} in {shown} is {_a(type(obj).__name__)}, not a class or function")
    defined_in = getattr(func, "__module__", None) or "?"
    ok = defined_in == module_name if allowed is None else (defined_in == allowed or defined_in.startswith(allowed + "."))
    if not ok:
        raise LookupError(f"{attr} is not defined in {shown} (it comes from {defined_in!r}); name a class or function "
                          f"that {shown} defines")
    return obj


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


PROBE_TIMEOUT_S = 180
_PROBE_MARK = "mbuild-probe:"


def probe_source(manifest: "Manifest") -> None:
    """Check, in a child process, that the model's module imports and names a class or function it defines.

    Importing runs the project's code, so it happens in a subprocess: whatever the file does at import
    time (a crash, an exit, a hang) cannot take `mbuild validate` down, and the answer is one located line.
    """
    import json
    import subprocess

    loc = manifest.positions.of(("source", "pytorch", "model"))
    cmd = [sys.executable, "-m", "mbuild.sources.pytorch", str(manifest.path), str(manifest.root)]
    try:
        proc = subprocess.run(cmd, cwd=manifest.root, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, errors="replace")
    except subprocess.TimeoutExpired:
        raise ManifestError(f"importing {_shown(manifest)} took more than {PROBE_TIMEOUT_S} s", loc,
                            "source.pytorch.model") from None
    answer = [line[len(_PROBE_MARK):] for line in proc.stdout.splitlines() if line.startswith(_PROBE_MARK)]
    if answer:
        problem = json.loads(answer[-1]).get("problem")
        if problem is None:
            return
    else:
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        problem = f"importing {_shown(manifest)} failed: {tail[:300]}"
    raise ManifestError(problem, loc, "source.pytorch.model")


def _probe_main(manifest_path: str, root: str) -> int:
    import json

    from mbuild.errors import MbuildError
    from mbuild.manifest import load_manifest

    problem = None
    try:
        _import_callable(load_manifest(manifest_path, root, check_targets=False))
    except ManifestError as e:
        problem = e.reason
    except MbuildError as e:
        problem = str(e)
    except BaseException as e:  # noqa: BLE001 - the project's module may raise anything, even SystemExit
        problem = f"importing the model failed: {type(e).__name__}: {e}"
    print(_PROBE_MARK + json.dumps({"problem": problem}), flush=True)
    return 0


def _load_weights(manifest: "Manifest", model, torch) -> None:
    path = manifest.source.weights
    loc = manifest.positions.of(("source", "pytorch", "weights"))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if "weights_only" in str(e) or "Unpickl" in type(e).__name__ or "pickle" in str(e).lower():
            raise ManifestError(
                f"{manifest.rel(path)} needs unsafe unpickling (it holds Python objects, not just tensors); "
                "mbuild only loads weights with torch.load(weights_only=True) - save a state_dict with "
                "torch.save(model.state_dict(), path)", loc, "source.pytorch.weights") from None
        raise ManifestError(f"cannot read {manifest.rel(path)} as PyTorch weights: {e}", loc,
                            "source.pytorch.weights") from None
    src = manifest.source
    where = "source.pytorch.weights" + (".key" if src.weights_key else "")
    state = _state_dict_in(state, src.weights_key, manifest.rel(path), manifest.positions.of(tuple(where.split("."))),
                           where)
    try:
        result = model.load_state_dict(state, strict=src.weights_strict)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        hint = "" if not src.weights_strict else "; if the checkpoint holds more than the model, set weights: {file, strict: false}"
        raise ManifestError(f"weights do not fit the model: {' '.join(first[:3])[:400]}{hint}", loc,
                            "source.pytorch.weights") from None
    ignored, missing = sorted(result.unexpected_keys), sorted(result.missing_keys)
    _WEIGHTS_REPORTS[str(manifest.path)] = {
        "file": manifest.rel(path), "key": src.weights_key, "strict": src.weights_strict, "loaded": len(state) - len(ignored),
        "ignored_keys": ignored, "missing_keys": missing}
    if ignored or missing:
        print(f"note: {manifest.rel(path)}: {len(ignored)} checkpoint key(s) ignored"
              + (f" ({', '.join(ignored[:5])}{', ...' if len(ignored) > 5 else ''})" if ignored else "")
              + (f", {len(missing)} model key(s) left at their initial values ({', '.join(missing[:5])})" if missing else "")
              + " (strict: false)")


_WEIGHTS_REPORTS: dict[str, dict] = {}


def weights_report(manifest: "Manifest") -> dict | None:
    """What loading the weights did (keys loaded, ignored, missing), for the source report."""
    return _WEIGHTS_REPORTS.get(str(manifest.path))


def _state_dict_in(state, key: str | None, shown: str, loc, where: str) -> dict:
    """The state dict inside a checkpoint: under ``key`` (dots descend), else the file itself or its 'state_dict'."""
    from mbuild.manifest._schema import suggest

    if key is None:
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    else:
        walked = []
        for part in key.split("."):
            if not isinstance(state, dict) or part not in state:
                keys = [str(k) for k in state] if isinstance(state, dict) else []
                inside = f" under {'.'.join(walked)!r}" if walked else ""
                listed = f" (it has: {', '.join(keys[:12])}{', ...' if len(keys) > 12 else ''})" if keys else ""
                raise ManifestError(f"{shown} has no key {part!r}{inside}{suggest(part, keys)}{listed}", loc, where)
            state = state[part]
            walked.append(part)
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        kind = type(state).__name__
        hint = "; name the key holding it: weights: {file, key: ...}" if isinstance(state, dict) else ""
        raise ManifestError(f"{shown} holds a {kind} that is not a state dict{hint}", loc, where)
    tensors = {k: v for k, v in state.items() if hasattr(v, "shape")}
    if not tensors:
        keys = ", ".join(list(state)[:8])
        raise ManifestError(f"{shown}: no tensors{' under that key' if key else ''} (keys: {keys}); name the key holding "
                            "the state dict: weights: {file, key: ...}", loc, where)
    return state


def example_args(manifest: "Manifest", inputs: dict[str, np.ndarray] | None = None, index: int = 0):
    """One sample per input as contiguous torch tensors, in manifest order."""
    torch = _torch()
    out = []
    for name, spec in manifest.inputs.items():
        if inputs is not None:
            arr = np.ascontiguousarray(inputs[name][index])
        else:
            arr = np.zeros(spec.shape, dtype=spec.dtype)
        out.append(torch.from_numpy(arr.copy()).contiguous())
    return tuple(out)


def _flatten_outputs(result) -> list:
    if isinstance(result, dict):
        return list(result.values())
    if isinstance(result, (list, tuple)):
        flat = []
        for r in result:
            flat.extend(_flatten_outputs(r))
        return flat
    return [result]


def run_reference(manifest: "Manifest", model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """fp32 outputs of the source on every sample, keyed by the manifest's output names."""
    torch = _torch()
    count = len(next(iter(inputs.values())))
    names = list(manifest.outputs)
    collected: dict[str, list] = {n: [] for n in names}
    with torch.inference_mode():
        for i in range(count):
            try:
                result = _flatten_outputs(model(*example_args(manifest, inputs, i)))
            except Exception as e:  # noqa: BLE001 - the project's model failed on the declared inputs
                if i:
                    raise BuildError(f"running the source model on sample {i} failed: {type(e).__name__}: {e}") from e
                shapes = ", ".join(f"{n} {list(s.shape)}" for n, s in manifest.inputs.items())
                first = " ".join(str(e).split())[:300]
                raise ManifestError(f"the model cannot run on the declared input shape(s) ({shapes}): "
                                    f"{type(e).__name__}: {first}", manifest.positions.of(("inputs",)), "inputs") from None
            if len(result) != len(names):
                raise ManifestError(
                    f"the model returns {len(result)} output(s) but the manifest declares {len(names)} "
                    f"({', '.join(names)})", manifest.positions.of(("outputs",)), "outputs")
            for n, r in zip(names, result):
                collected[n].append(r.detach().float().numpy() if r.dtype.is_floating_point else r.numpy())
    return {n: np.stack(v) for n, v in collected.items()}


def export_onnx(manifest: "Manifest", model, out_path: Path) -> list[str]:
    """Canonical ONNX through the TorchScript exporter (dynamo exporter as fallback)."""
    torch = _torch()
    args = example_args(manifest)
    notes = []
    kwargs = dict(input_names=list(manifest.inputs), output_names=list(manifest.outputs), opset_version=ONNX_OPSET,
                  do_constant_folding=True)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, args, str(out_path), dynamo=False, **kwargs)
            notes.append(f"exported with torch.onnx (TorchScript exporter, opset {ONNX_OPSET})")
        except Exception as first:  # noqa: BLE001 - fall back to the other exporter, keep both causes
            try:
                torch.onnx.export(model, args, str(out_path), dynamo=True, external_data=False, **kwargs)
                notes.append(f"TorchScript exporter failed ({type(first).__name__}); exported with the dynamo exporter")
            except Exception as second:
                raise BuildError(f"torch.onnx.export failed: {type(first).__name__}: {first}; "
                                 f"dynamo exporter: {type(second).__name__}: {second}") from second
    return notes


def count_flops(manifest: "Manifest", model) -> int | None:
    """FLOPs of one forward pass with PyTorch's own formulas (2 per multiply-add, ``torch.utils.flop_counter``).

    ``FlopCounterMode`` itself wraps its dispatch in ``torch._disable_dynamo``, whose first call imports
    TorchDynamo (~2 s of every PyTorch source step); this mode applies the same formula table without it.
    """
    torch = _torch()
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class _Count(TorchDispatchMode):
        total = 0

        @classmethod
        def _should_skip_dynamo(cls) -> bool:  # nothing here is compiled: no disable-wrapper, no dynamo import
            return False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            formula = flop_registry.get(func._overloadpacket)
            if formula is None:  # a composite (conv2d, linear): count the ops it is made of
                with self:
                    out = func.decompose(*args, **kwargs)
                if out is not NotImplemented:
                    return out
            out = func(*args, **kwargs)
            if formula is not None:
                self.total += int(formula(*args, **kwargs, out_val=out))
            return out

    counter = _Count()
    with torch.inference_mode(), counter:
        model(*example_args(manifest))
    return int(counter.total)


def count_params(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def versions() -> dict[str, str]:
    import importlib.metadata as md

    return {"torch": md.version("torch")}


def rewrite_prelu(model) -> bool:
    """Replace nn.PReLU with an equivalent any-rank form; True if something was replaced.

    Core ML converts a per-channel prelu only on 4-D inputs (coremltools and ExecuTorch's Core ML
    partitioner alike fail on PReLU after a Linear layer); relu(x) - w * relu(-x) converts at any rank.
    """
    import torch

    class _PReLU(torch.nn.Module):
        def __init__(self, weight):
            super().__init__()
            self.weight = torch.nn.Parameter(weight.detach().clone(), requires_grad=False)

        def forward(self, x):
            w = self.weight
            if w.numel() > 1 and x.dim() > 1:
                w = w.reshape([1, -1] + [1] * (x.dim() - 2))
            return torch.relu(x) - w * torch.relu(-x)

    replaced = False
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.PReLU):
                setattr(parent, child_name, _PReLU(child.weight))
                replaced = True
    return replaced


if __name__ == "__main__":
    sys.exit(_probe_main(*sys.argv[1:3]))
