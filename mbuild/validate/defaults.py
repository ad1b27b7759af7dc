"""Default tolerances by recipe family and output kind (documented in docs/recipes.md).

Tensor limits apply to every output as a whole; task limits to outputs of their kind. The parts of a
detection output gate only where a tolerance names them (``outputs.<name>.parts.<part>``). A manifest
overrides them: validate.default -> validate.<recipe> -> the target's validate, each level's
``outputs.<name>`` after its general keys.
"""
from __future__ import annotations

FAMILIES = ("fp32", "fp16", "int8-static", "int16x8", "int8-dynamic", "weight-only", "compressed")

TENSOR = {
    "fp32": {"cosine_min": 0.9999, "channel_snr_db_min": 30, "stream_cosine_min": 0.9999},
    "fp16": {"cosine_min": 0.999, "channel_snr_db_min": 25, "stream_cosine_min": 0.999},
    "int8-static": {"cosine_min": 0.98, "channel_snr_db_min": 8, "stream_cosine_min": 0.98},
    "int16x8": {"cosine_min": 0.99, "channel_snr_db_min": 15, "stream_cosine_min": 0.99},
    "int8-dynamic": {"cosine_min": 0.98, "channel_snr_db_min": 8, "stream_cosine_min": 0.98},
    "weight-only": {"cosine_min": 0.99, "channel_snr_db_min": 15, "stream_cosine_min": 0.99},
    "compressed": {"cosine_min": 0.95, "channel_snr_db_min": 5, "stream_cosine_min": 0.95},
}

_INT8 = ("int8-static", "int8-dynamic")

TASK = {
    "classification": {
        "fp32": {"top1_agreement_min": 0.99, "top1_agreement_confident_min": 0.995, "accuracy_drop_max": 0.5},
        "fp16": {"top1_agreement_min": 0.9, "top1_agreement_confident_min": 0.99, "accuracy_drop_max": 1.0},
        "int16x8": {"top1_agreement_min": 0.9, "top1_agreement_confident_min": 0.98, "accuracy_drop_max": 1.0},
        "weight-only": {"top1_agreement_min": 0.9, "top1_agreement_confident_min": 0.97, "accuracy_drop_max": 1.5},
        **{f: {"top1_agreement_min": 0.9, "top1_agreement_confident_min": 0.95, "accuracy_drop_max": 2.0} for f in _INT8},
        "compressed": {"top1_agreement_min": 0.85, "top1_agreement_confident_min": 0.9, "accuracy_drop_max": 3.0},
    },
    "detection": {
        "fp32": {"recall_min": 0.99, "precision_min": 0.99, "box_iou_min": 0.98, "score_error_max": 0.01},
        "fp16": {"recall_min": 0.97, "precision_min": 0.97, "box_iou_min": 0.95, "score_error_max": 0.05},
        **{f: {"recall_min": 0.9, "precision_min": 0.9, "box_iou_min": 0.9}
           for f in ("int8-static", "int8-dynamic", "int16x8", "weight-only")},
        "compressed": {"recall_min": 0.85, "precision_min": 0.85, "box_iou_min": 0.85},
    },
    "segmentation": {
        "fp32": {"mask_iou_min": 0.99, "pixel_agreement_min": 0.999},
        "fp16": {"mask_iou_min": 0.98, "pixel_agreement_min": 0.995},
        **{f: {"mask_iou_min": 0.9, "pixel_agreement_min": 0.97}
           for f in ("int8-static", "int8-dynamic", "int16x8", "weight-only")},
        "compressed": {"mask_iou_min": 0.85, "pixel_agreement_min": 0.95},
    },
    "embedding": {
        "fp32": {"embedding_cosine_min": 0.9999, "embedding_cosine_worst_min": 0.999, "nn_agreement_min": 0.99},
        "fp16": {"embedding_cosine_min": 0.999, "embedding_cosine_worst_min": 0.995, "nn_agreement_min": 0.97},
        **{f: {"embedding_cosine_min": 0.98, "embedding_cosine_worst_min": 0.95, "nn_agreement_min": 0.9}
           for f in ("int8-static", "int8-dynamic", "int16x8", "weight-only")},
        "compressed": {"embedding_cosine_min": 0.95, "embedding_cosine_worst_min": 0.9, "nn_agreement_min": 0.85},
    },
    "sequence": {
        "fp32": {"exact_match_min": 0.99, "cer_max": 0.001},
        "fp16": {"exact_match_min": 0.97, "cer_max": 0.01},
        **{f: {"exact_match_min": 0.9, "cer_max": 0.02} for f in ("int8-static", "int8-dynamic", "int16x8", "weight-only")},
        "compressed": {"exact_match_min": 0.85, "cer_max": 0.05},
    },
    "regression": {
        "fp32": {"range_error_max": 0.001},
        "fp16": {"range_error_max": 0.01},
        **{f: {"range_error_max": 0.05} for f in ("int8-static", "int8-dynamic", "int16x8", "weight-only")},
        "compressed": {"range_error_max": 0.1},
    },
}


def default_tolerance(family: str, kind: str) -> dict[str, float]:
    family = family if family in TENSOR else "fp32"
    out = dict(TENSOR[family])
    out.update(TASK.get(kind, {}).get(family, {}))
    return out
