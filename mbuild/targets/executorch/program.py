"""Running a ``.pte`` with ExecuTorch's Python runtime (``executorch.runtime``).

A ``.pte`` is static-shape: it takes exactly the batch it was exported with, so samples are fed
one at a time (the manifest's declared shape). The pip runtime registers XNNPACK (and QNN,
OpenVINO), not Core ML or Vulkan: a program delegating to those cannot be loaded here.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from mbuild.errors import BuildError
from mbuild.targets.executorch.quiet import quiet

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


def registered_backends() -> list[str]:
    """Backends the installed ExecuTorch runtime can execute."""
    with quiet():
        from executorch.runtime import Runtime

        return sorted(Runtime.get().backend_registry.registered_backend_names)


def run_program(path: Path, inputs: dict[str, np.ndarray], input_names: list[str],
                output_names: list[str]) -> tuple[dict[str, np.ndarray], list[float]]:
    """Outputs ([samples, *shape] per output, in the program's output order) and per-sample latency."""
    import numpy as np
    import torch

    with quiet():  # the C++ runtime logs to file descriptor 2 while loading and running
        from executorch.runtime import Runtime

        try:
            method = Runtime.get().load_program(str(path)).load_method("forward")
        except Exception as e:  # noqa: BLE001
            raise BuildError(f"ExecuTorch could not load {Path(path).name}: {type(e).__name__}: {e}") from e
        count = len(next(iter(inputs.values())))
        collected: list[list] = []
        latencies = []
        for i in range(count):
            feed = [torch.from_numpy(np.ascontiguousarray(inputs[n][i])) for n in input_names]
            t0 = time.perf_counter()
            try:
                result = method.execute(feed)
            except Exception as e:  # noqa: BLE001
                shapes = ", ".join(f"{n}: {list(inputs[n][i].shape)}" for n in input_names)
                raise BuildError(f"ExecuTorch execute failed on sample {i} ({shapes}): {type(e).__name__}: {e}") from e
            if i > 0:
                latencies.append((time.perf_counter() - t0) * 1000)
            collected.append([r.detach().numpy().copy() if hasattr(r, "detach") else np.asarray(r) for r in result])
    for flat in collected[:1]:
        if len(flat) != len(output_names):
            raise BuildError(f"the program returned {len(flat)} outputs; the manifest declares {len(output_names)} "
                             f"({', '.join(output_names)})")
    outputs = {name: np.stack([sample[k] for sample in collected]) for k, name in enumerate(output_names)}
    return outputs, latencies
