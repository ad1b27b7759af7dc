"""Tolerance gates: which limits a variant's metrics break, worded for the user (output, part, metric, value, limit)."""
from __future__ import annotations

# tolerance key -> (metric name, comparison); 'max' means the metric must not exceed the limit.
GATES = {
    "max_abs_max": ("max_abs", "max"),
    "mean_abs_max": ("mean_abs", "max"),
    "rmse_max": ("rmse", "max"),
    "cosine_min": ("cosine", "min"),
    "snr_db_min": ("snr_db", "min"),
    "channel_snr_db_min": ("channel_snr_db_min", "min"),
    "top1_agreement_min": ("top1_agreement", "min"),
    "top1_agreement_confident_min": ("top1_agreement_confident", "min"),
    "top5_agreement_min": ("top5_agreement", "min"),
    "accuracy_drop_max": ("accuracy_drop", "max"),
    "recall_min": ("recall", "min"),
    "precision_min": ("precision", "min"),
    "box_iou_min": ("box_iou", "min"),
    "score_error_max": ("score_error_max", "max"),
    "mask_iou_min": ("mask_iou", "min"),
    "pixel_agreement_min": ("pixel_agreement", "min"),
    "embedding_cosine_min": ("embedding_cosine", "min"),
    "embedding_cosine_worst_min": ("embedding_cosine_worst", "min"),
    "nn_agreement_min": ("nn_agreement", "min"),
    "exact_match_min": ("exact_match", "min"),
    "cer_max": ("cer", "max"),
    "range_error_max": ("range_error", "max"),
    "stream_cosine_min": ("stream_cosine", "min"),
}
# Keys that may gate a part of a detection output (``outputs.<name>.parts.<part>`` in a tolerance).
PART_GATES = {"max_abs_max", "mean_abs_max", "rmse_max", "cosine_min", "snr_db_min", "channel_snr_db_min"}
# Task metrics: the ones the searches rank by and 'exclude: auto' starts on.
TASK_METRICS = {m for k, (m, _) in GATES.items() if k not in PART_GATES}


def check_tolerance(metrics: dict[str, dict], tolerance: dict[str, dict]) -> tuple[list[dict], list[str]]:
    """(failures, notes): one failure per broken limit; a note per limit whose metric is n/a for that output.

    ``tolerance[output]`` holds the output's limits; its ``parts`` entry, the limits of each part of a
    detection output (measured on the part's own scale).
    """
    failures, notes = [], []
    for output, values in metrics.items():
        limits = dict(tolerance.get(output, {}))
        part_limits = limits.pop("parts", {}) or {}
        checks = [(None, values, limits)]
        checks += [(part, (values.get("parts") or {}).get(part), lim) for part, lim in sorted(part_limits.items())]
        for part, vals, lims in checks:
            where = f"{output}.{part}" if part else output
            if vals is None:
                notes.append(f"{where}: no such part of this output, so its limits were not applied")
                continue
            for key, limit in sorted(lims.items()):
                metric, sense = GATES[key]
                if metric not in vals:
                    continue  # not a metric of this kind (top-1 of a regression output)
                value = vals[metric]
                if value is None:
                    notes.append(f"{where}: {metric} is n/a here, so {key} was not applied")
                    continue
                broken = value > limit if sense == "max" else value < limit
                if broken:
                    word = "above the maximum" if sense == "max" else "below the minimum"
                    failures.append({"output": output, "part": part, "metric": metric, "value": value, "limit": limit,
                                     "tolerance": key, "task_metric": metric in TASK_METRICS,
                                     "message": f"{where}: {metric} = {value:.6g} is {word} {limit:g} ({key})"})
    return failures, notes


def shortfall(failures: list[dict]) -> float:
    """How far a variant is from its tolerance, summed over broken limits (relative): lower is better."""
    total = 0.0
    for f in failures:
        scale = max(abs(f["limit"]), 1e-9)
        total += abs(f["value"] - f["limit"]) / scale
    return total
