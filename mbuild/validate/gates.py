"""Tolerance gates: which limits a variant's metrics break, worded for the user."""
from __future__ import annotations

# tolerance key -> (metric name, comparison) ; 'max' means the metric must not exceed the limit.
GATES = {
    "max_abs_max": ("max_abs", "max"),
    "mean_abs_max": ("mean_abs", "max"),
    "rmse_max": ("rmse", "max"),
    "cosine_min": ("cosine", "min"),
    "snr_db_min": ("snr_db", "min"),
    "channel_snr_db_min": ("channel_snr_db_min", "min"),
    "top1_agreement_min": ("top1_agreement", "min"),
    "top5_agreement_min": ("top5_agreement", "min"),
    "accuracy_drop_max": ("accuracy_drop", "max"),
}


def check_tolerance(metrics: dict[str, dict[str, float]], tolerance: dict[str, float]) -> list[dict]:
    """One entry per broken limit: output, metric, value, limit and a sentence saying so."""
    failures = []
    for output, values in metrics.items():
        for key, limit in sorted(tolerance.items()):
            metric, sense = GATES[key]
            if metric not in values:
                continue  # e.g. top-1 on a regression output, accuracy without labels
            value = values[metric]
            broken = value > limit if sense == "max" else value < limit
            if broken:
                word = "above the maximum" if sense == "max" else "below the minimum"
                failures.append({"output": output, "metric": metric, "value": value, "limit": limit, "tolerance": key,
                                 "message": f"{output}: {metric} = {value:.6g} is {word} {limit:g} ({key})"})
    return failures
