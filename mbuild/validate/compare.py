"""Every output measured as what it is: tensor metrics (whole and per part) plus the task metrics of its kind."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mbuild.validate.metrics import array_axis, channel_snr_min, round_metric, tensor_metrics
from mbuild.validate.semantics import Resolved, resolve_all

if TYPE_CHECKING:  # pragma: no cover
    from mbuild.manifest.model import OutputSpec


def compare_outputs(reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray], specs: dict[str, "OutputSpec"],
                    labels: np.ndarray | None = None, streams: tuple[dict, dict] | None = None) -> dict[str, dict]:
    """Per-output metrics; a metric that does not apply is None (n/a). ``streams``: (reference, variant) runs."""
    for name in reference:
        if name not in outputs:
            raise ValueError(f"output {name!r} is missing from the variant's results")
    shapes = {n: tuple(a.shape[1:]) for n, a in reference.items()}
    resolved = resolve_all(specs, shapes)
    label_output = next((n for n, s in specs.items() if s.kind == "classification"), None)
    result = {}
    for name, ref in reference.items():
        spec, res = specs[name], resolved[name]
        m = output_metrics(ref, outputs[name], spec, res, labels if name == label_output else None,
                           reference, outputs)
        if streams is not None and name in streams[0]:
            from mbuild.validate.stream import stream_metrics

            m.update(stream_metrics(streams[0][name], streams[1][name]))
        result[name] = _rounded(with_label_names(m, spec))
    return result


def with_label_names(m: dict, spec: "OutputSpec") -> dict:
    """Class indices in the record shown by name too, when the output declares a labels file."""
    if spec.labels is None:
        return m
    from mbuild.sources.declarations import read_labels_file

    names = read_labels_file(spec.labels)

    def name(i):
        return names[i] if isinstance(i, int) and 0 <= i < len(names) else None

    if m.get("worst_class") is not None:
        m["worst_class_label"] = name(m["worst_class"])
    tokens = m.get("worst_tokens")
    if tokens:
        m["worst_text"] = {k: "".join(name(t) or "?" for t in v) for k, v in tokens.items()}
    return m


def output_metrics(ref, out, spec: "OutputSpec", res: Resolved, labels, reference: dict, outputs: dict) -> dict:
    m: dict = {"kind": spec.kind}
    m.update(tensor_metrics(ref, out))
    channel_axis = _channel_axis(res)
    snr = channel_snr_min(ref, out, None if channel_axis is None else array_axis(channel_axis, ref.ndim - 1),
                          spec.snr_floor)
    m.update(snr)
    kind = spec.kind
    if kind == "classification":
        from mbuild.validate.classification import classification_metrics

        m.update(classification_metrics(ref, out, res.axis, labels, spec.margin))
    elif kind == "segmentation":
        from mbuild.validate.classification import segmentation_metrics

        m.update(segmentation_metrics(ref, out, res.axis, spec.threshold, spec.activation))
    elif kind == "embedding":
        from mbuild.validate.embedding import embedding_metrics

        m.update(embedding_metrics(ref, out, res.axis))
    elif kind == "sequence":
        from mbuild.validate.sequence import sequence_metrics

        m.update(sequence_metrics(ref, out, res.axis, res.time_axis, spec.decode or "argmax", spec.blank))
    elif kind == "regression":
        from mbuild.validate.regression import regression_metrics

        m.update(regression_metrics(ref, out, spec.range))
    elif kind == "detection":
        from mbuild.validate.detection import DetectionConfig, detection_metrics

        cfg = DetectionConfig(spec.score_threshold, spec.iou_threshold, spec.match_iou, spec.max_detections,
                              spec.score_margin)
        m.update(detection_metrics(reference, outputs, res.parts, cfg))
        m["parts"] = _part_metrics(reference, outputs, res, spec.snr_floor)
    return m


def _channel_axis(res: Resolved) -> int | None:
    """The declared class/channel axis; sequences and embeddings are judged by their task metrics instead."""
    if res.kind in ("sequence", "embedding", "detection"):
        return None
    if res.kind == "segmentation" and res.axis is not None and res.shape[res.axis] < 2:
        return None
    return res.axis


def _part_metrics(reference: dict, outputs: dict, res: Resolved, floor: float) -> dict:
    """Tensor metrics of each part that is a slice of this output, each on its own scale."""
    from mbuild.validate.detection import part_values

    parts = {}
    for pname, part in res.parts.items():
        if part.output != res.name:
            continue  # another output: measured as that output
        r, o = part_values(reference, part), part_values(outputs, part)
        pm = tensor_metrics(r, o)
        pm.update(channel_snr_min(r, o, 2, floor))
        pm["entries"] = [part.start, part.stop]
        parts[pname] = _rounded(pm)
    return parts


def _rounded(m: dict) -> dict:
    return {k: (v if isinstance(v, (dict, list)) else round_metric(v)) for k, v in m.items()}
