"""One short text per output for check lines, ``mbuild inspect``, report.html and the searches.

The task metric of the output's kind comes first; a metric that does not apply shows as n/a.
"""
from __future__ import annotations


def _fmt(value, spec: str = ".4f", pct: bool = False) -> str:
    if value is None:
        return "n/a"
    if pct:
        return f"{value * 100:.1f}%"
    return format(value, spec)


def task_figures(m: dict) -> list[str]:
    """The task metrics of one output's record, worded (empty for generic outputs)."""
    kind = m.get("kind")
    if kind == "classification" or "top1_agreement" in m:
        parts = []
        if "accuracy" in m:
            parts.append(f"accuracy {m['accuracy']:.2f}% (ref {m['reference_accuracy']:.2f}%)")
        parts.append(f"top-1 agreement {_fmt(m.get('top1_agreement'))}")
        if m.get("top1_agreement_confident") is not None or m.get("confident_samples") == 0:
            parts.append(f"confident {_fmt(m.get('top1_agreement_confident'))} ({m.get('confident_samples')} samples)")
        return parts
    if kind == "detection":
        return [f"recall {_fmt(m.get('recall'))}", f"precision {_fmt(m.get('precision'))}",
                f"box IoU {_fmt(m.get('box_iou'))}", f"score error {_fmt(m.get('score_error_max'))}",
                f"{m.get('reference_detections', 0)} reference detections"]
    if kind == "segmentation":
        return [f"mask IoU {_fmt(m.get('mask_iou'))}", f"pixel agreement {_fmt(m.get('pixel_agreement'))}"]
    if kind == "embedding":
        return [f"embedding cosine {_fmt(m.get('embedding_cosine'))} (worst {_fmt(m.get('embedding_cosine_worst'))})",
                f"nn agreement {_fmt(m.get('nn_agreement'))}"]
    if kind == "sequence":
        parts = [f"exact match {_fmt(m.get('exact_match'))}", f"CER {_fmt(m.get('cer'))}"]
        text = m.get("worst_text")
        if text and text["reference"] != text["variant"]:
            parts.append(f"worst: {text['reference']!r} -> {text['variant']!r}")
        return parts
    if kind == "regression":
        return [f"range error {_fmt(m.get('range_error'), pct=True)} of [{_range(m.get('range'))}]"]
    return []


def _range(r) -> str:
    return ", ".join(f"{x:.4g}" for x in r) if r else "?"


def output_headline(m: dict) -> str:
    parts = task_figures(m)
    if "stream_cosine" in m:
        parts.append(f"stream cosine {_fmt(m['stream_cosine'])} over {m.get('stream_steps')} steps")
    parts.append(f"cosine {_fmt(m.get('cosine'), '.5f')}")
    for pname, pm in (m.get("parts") or {}).items():
        parts.append(f"{pname} cosine {_fmt(pm.get('cosine'), '.5f')}")
    snr = m.get("channel_snr_db_min")
    if snr is not None:
        parts.append(f"channel SNR {'exact' if snr >= 999 else f'{snr:.1f} dB'}")
    return ", ".join(parts)


def key_metric(metrics: dict) -> str:
    """The one figure per output that tables show (task metric, else cosine), outputs joined by '; '."""
    out = []
    for name, m in metrics.items():
        figures = task_figures(m)
        head = figures[0] if figures else f"cosine {_fmt(m.get('cosine'), '.4f')}"
        out.append(f"{name}: {head}")
    return "; ".join(out)
