"""Real printed text lines for the PP-OCR recognizer, cut out of scikit-image's ``data.page()`` photo.

rapidocr's own pipeline cannot be imported here (it needs OpenCV, pyclipper and shapely, which our
pins leave out), so its steps are redone with numpy/scikit-image/Pillow on the package's own models
and settings (``rapidocr_onnxruntime/config.yaml``): the PP-OCRv4 *detector* finds the line boxes
(shorter side scaled to 736, probability > 0.3, box score > 0.5, boxes grown by area * 1.6 /
perimeter as DBNet's unclip does); each line is split at the blank columns between words, and every
run of whole words that fits the recognizer's pinned 48 x 320 input becomes one sample, preprocessed
as rapidocr's ``resize_norm_img`` does (height 48, aspect kept, (x/255 - 0.5)/0.5, zero padding on
the right; bilinear resize by Pillow where rapidocr uses cv2). A sample is kept only if rapidocr's own
``CTCLabelDecode`` reads it as real text: at least 4 characters, found in what the recognizer reads
from the whole line. The page has 7 printed lines, so validation and calibration are different word
runs of the same lines.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

HEIGHT, WIDTH = 48, 320
DET_SIDE, DET_THRESH, BOX_THRESH, UNCLIP = 736, 0.3, 0.5, 1.6


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def rapidocr_decoder(package_dir: Path, rec_model: Path):
    """rapidocr's own CTC decoder (its ``ch_ppocr_rec/utils.py`` needs only numpy), with the model's characters."""
    spec = importlib.util.spec_from_file_location("rapidocr_rec_utils", package_dir / "ch_ppocr_rec" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CTCLabelDecode(character=characters(rec_model))


def characters(rec_model: Path) -> list[str]:
    """The recognizer's dictionary as rapidocr reads it: the model's ``character`` metadata, one per line."""
    return _session(rec_model).get_modelmeta().custom_metadata_map["character"].splitlines()


def line_boxes(page: np.ndarray, det_model: Path) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of each text line the detector finds, top to bottom."""
    from PIL import Image
    from skimage import measure, morphology

    h, w = page.shape
    H = DET_SIDE
    W = int(round(w * H / h / 32)) * 32
    img = np.asarray(Image.fromarray(page).convert("RGB").resize((W, H), Image.BILINEAR), np.float32)
    x = ((img / 255 - 0.5) / 0.5).transpose(2, 0, 1)[None].astype(np.float32)
    prob = _session(det_model).run(None, {"x": x})[0][0, 0]
    labels = measure.label(morphology.dilation(prob > DET_THRESH, np.ones((2, 2), bool)))
    boxes = []
    for r in measure.regionprops(labels, intensity_image=prob):
        if r.intensity_mean < BOX_THRESH or r.area < 50:
            continue
        y0, x0, y1, x1 = r.bbox
        d = r.area * UNCLIP / r.perimeter
        box = (max(0.0, (x0 - d) * w / W), max(0.0, (y0 - d) * h / H),
               min(float(w), (x1 + d) * w / W), min(float(h), (y1 + d) * h / H))
        boxes.append(tuple(int(round(v)) for v in box))
    return sorted(boxes, key=lambda b: (b[1], b[0]))


def word_spans(page: np.ndarray, box) -> list[tuple[int, int]]:
    """Column spans of the words in a line box: ink columns (Otsu) separated by gaps wider than h/5."""
    from skimage.filters import threshold_otsu

    x0, y0, x1, y1 = box
    gray = page[y0:y1, x0:x1].astype(np.float64)
    cols = np.where((gray < threshold_otsu(gray)).any(axis=0))[0]
    spans, start, prev = [], cols[0], cols[0]
    for c in cols[1:]:
        if c - prev > max(2, 0.2 * (y1 - y0)):
            spans.append((x0 + start, x0 + prev + 1))
            start = c
        prev = c
    spans.append((x0 + start, x0 + prev + 1))
    return spans


def recognizer_input(page: np.ndarray, x0: int, y0: int, x1: int, y1: int, width: int = WIDTH) -> np.ndarray:
    """[3, 48, width]: rapidocr's resize_norm_img (height 48, aspect kept, normalised, zero-padded right)."""
    from PIL import Image

    crop = Image.fromarray(page[y0:y1, x0:x1]).convert("RGB")
    resized_w = min(width, int(np.ceil(HEIGHT * (x1 - x0) / (y1 - y0))))
    img = np.asarray(crop.resize((resized_w, HEIGHT), Image.BILINEAR), np.float32)
    out = np.zeros((3, HEIGHT, width), np.float32)
    out[:, :, :resized_w] = ((img / 255 - 0.5) / 0.5).transpose(2, 0, 1)
    return out


def text_line_samples(package_dir: Path) -> tuple[np.ndarray, list[str]]:
    """All verified word-run crops of the page as [N, 3, 48, 320] and the text rapidocr reads in each."""
    from skimage import data

    models = package_dir / "models"
    det, rec = models / "ch_PP-OCRv4_det_infer.onnx", models / "ch_PP-OCRv4_rec_infer.onnx"
    decode, session, page = rapidocr_decoder(package_dir, rec), _session(rec), data.page()

    def read(x: np.ndarray) -> str:
        return decode(session.run(None, {"x": x[None]})[0])[0][0]

    xs, texts = [], []
    for box in line_boxes(page, det):
        x0, y0, x1, y1 = box
        whole = read(recognizer_input(page, *box, width=int(np.ceil(HEIGHT * (x1 - x0) / (y1 - y0)))))
        whole = whole.replace(" ", "")
        spans = word_spans(page, box)
        for i in range(len(spans)):
            for j in range(i, len(spans)):
                a, b = max(x0, spans[i][0] - 2), min(x1, spans[j][1] + 2)
                if (b - a) * HEIGHT > WIDTH * (y1 - y0):
                    break
                x = recognizer_input(page, a, y0, b, y1)
                text = read(x)
                if len(text.replace(" ", "")) >= 4 and text.replace(" ", "") in whole:
                    xs.append(x)
                    texts.append(text)
    return np.stack(xs), texts


def labels(rec_model: Path) -> list[str]:
    """The class axis in order: CTC blank, the model's characters, the space rapidocr appends (6625)."""
    return ["<blank>", *characters(rec_model), " "]
