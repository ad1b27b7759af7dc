"""Copy the pretrained models out of their installed PyPI packages and write the data sets.

The manifests may not point outside the conformance project, so the package files are copied
into ``work/models/`` (never committed). Data: real photos from ``skimage.data`` for the image
models, preprocessed the way each package does it; the VAD model gets synthetic audio (no audio
ships in scikit-image or scikit-learn), with the LSTM state each chunk really sees, computed by
running the package's model over the stream. ``PROVENANCE`` says which is which for the README.
"""
from __future__ import annotations

import importlib.metadata as md
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"

# model id -> (distribution, file inside it, copy name)
PACKAGE_FILES = {
    "facenet-onet": ("facenet-pytorch", "facenet_pytorch/data/onet.pt", "onet.pt"),
    "facenet-pnet": ("facenet-pytorch", "facenet_pytorch/data/pnet.pt", "pnet.pt"),
    "ppocr-det": ("rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", "ppocr_det.onnx"),
    "ppocr-rec": ("rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", "ppocr_rec.onnx"),
    "fer-emotion": ("fer", "fer/data/emotion_model.hdf5", "fer_emotion.h5"),
    "silero-vad": ("silero-vad", "silero_vad/data/silero_vad_16k_op15.onnx", "silero_vad_16k.onnx"),
}

PROVENANCE = {
    "facenet-onet": "real: 48x48 crops of scikit-image sample photos (astronaut, chelsea, coffee, camera, rocket), "
                    "MTCNN normalisation (x - 127.5) / 128",
    "ppocr-det": "real: 320x320 crops of the scikit-image page photo (printed text), PP-OCR normalisation "
                 "(x/255 - 0.5) / 0.5",
    "ppocr-rec": "real: 48x320 crops of the printed lines of the scikit-image page photo (word runs of the 7 lines "
                 "PP-OCRv4's detector finds; 44 validation, 32 other runs for calibration), each read as real text "
                 "by rapidocr's own CTC decoder; rapidocr's resize_norm_img (height 48, (x/255 - 0.5)/0.5, zero "
                 "padding)",
    "facenet-pnet": "model: PNet's box and face-score heads joined into ONE [1, 5, 1849] YOLO-style output by "
                    "conformance/models/facenet_pnet.py (the concatenation is ours, the weights the package's); "
                    "data real: 96x96 crops of the two scikit-image photos with faces (astronaut, camera; face 14-36 px "
                    "at random places) and of photos without (chelsea, coffee, rocket, ihc) for PNet's false "
                    "positives (64 validation: 48 with a face, 16 without); calibration 96 other crops of the same "
                    "photos; MTCNN normalisation (x - 127.5) / 128",
    "fer-emotion": "real: 64x64 grayscale crops of scikit-image sample photos (camera, astronaut, ...), "
                   "FER normalisation (x/255 - 0.5) * 2",
    "silero-vad": "synthetic: 16 kHz tones, harmonic bursts and noise (no audio data ships in scikit-image or "
                  "scikit-learn); LSTM state per chunk from running the package's model over the stream",
}


def package_file(dist: str, rel: str) -> Path:
    """A file inside an installed distribution, located without importing the package."""
    try:
        path = Path(md.distribution(dist).locate_file(rel))
    except md.PackageNotFoundError:
        raise SystemExit(f"error: package {dist!r} is not installed; install the conformance requirements: "
                         "pip install --no-deps -r requirements/conformance.txt") from None
    if not path.exists():
        raise SystemExit(f"error: {dist} has no {rel}")
    return path


def copy_models() -> None:
    folder = WORK / "models"
    folder.mkdir(parents=True, exist_ok=True)
    for dist, rel, name in PACKAGE_FILES.values():
        src, dst = package_file(dist, rel), folder / name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)


def _photos(gray: bool) -> list[np.ndarray]:
    from skimage import color, data

    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry"):
        img = getattr(data, name)().astype(np.float32)
        if gray and img.ndim == 3:
            img = color.rgb2gray(img / 255.0) * 255.0
        if not gray and img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        out.append(img)
    return out


def _crops(images, count: int, size: int, seed: int, min_side: int, max_side: int) -> np.ndarray:
    """Random square crops resized to size x size, deterministic for a seed."""
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        img = images[i % len(images)]
        h, w = img.shape[:2]
        side = int(rng.integers(min_side, min(max_side, h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        out.append(resize(img[y:y + side, x:x + side], (size, size), preserve_range=True, anti_aliasing=True))
    return np.stack(out).astype(np.float32)


def _save(name: str, split: str, **arrays) -> None:
    folder = WORK / "data"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}-{split}.npz", "wb") as fh:
        np.savez(fh, **arrays)


def data_onet() -> None:
    for split, seed, count in (("val", 1, 96), ("calib", 2, 64)):
        x = _crops(_photos(gray=False), count, 48, seed, 48, 220)
        x = (x - 127.5) * 0.0078125
        _save("facenet-onet", split, x=np.transpose(x, (0, 3, 1, 2))[:, None])


def data_ppocr() -> None:
    from skimage import data

    # every sample holds text: on a text-free crop the map is ~1e-7 everywhere and cosine means nothing
    pages = [np.stack([data.page().astype(np.float32)] * 3, -1)]
    for split, seed, count in (("val", 3, 12), ("calib", 4, 12)):
        x = _crops(pages, count, 320, seed, 100, 190)
        x = (x / 255.0 - 0.5) / 0.5
        _save("ppocr-det", split, x=np.transpose(x, (0, 3, 1, 2))[:, None].astype(np.float32))


def data_fer() -> None:
    for split, seed, count in (("val", 5, 96), ("calib", 6, 64)):
        x = _crops(_photos(gray=True), count, 64, seed, 64, 260)
        x = (x / 255.0 - 0.5) * 2.0
        _save("fer-emotion", split, x=x[:, None, :, :, None].astype(np.float32))


def data_silero() -> None:
    """Chunks of 64 context + 512 new samples, with the state the model carries into each chunk."""
    import onnxruntime as ort

    sr, chunk, context = 16000, 512, 64
    sess = ort.InferenceSession(str(WORK / "models" / "silero_vad_16k.onnx"), providers=["CPUExecutionProvider"])
    for split, seed, seconds in (("val", 7, 4.0), ("calib", 8, 3.0)):
        audio = _synthetic_audio(np.random.default_rng(seed), sr, seconds)
        state = np.zeros((2, 1, 128), np.float32)
        ctx = np.zeros((1, context), np.float32)
        xs, states = [], []
        for start in range(0, len(audio) - chunk + 1, chunk):
            x = np.concatenate([ctx, audio[None, start:start + chunk]], axis=1).astype(np.float32)
            xs.append(x)
            states.append(state)
            _, state = sess.run(None, {"input": x, "state": state, "sr": np.array(sr, np.int64)})
            ctx = x[:, -context:]
        _save("silero-vad", split, input=np.stack(xs), state=np.stack(states),
              sr=np.full(len(xs), sr, np.int64))


def _synthetic_audio(rng, sr: int, seconds: float) -> np.ndarray:
    """Alternating silence-ish noise and voiced-like harmonic bursts with a moving pitch."""
    n = int(sr * seconds)
    t = np.arange(n) / sr
    audio = 0.003 * rng.standard_normal(n)
    pos = 0
    while pos < n:
        length = int(rng.uniform(0.25, 0.6) * sr)
        if rng.random() < 0.6:
            seg = t[: min(length, n - pos)]
            f0 = rng.uniform(100, 250) * (1 + 0.1 * np.sin(2 * np.pi * 3 * seg))
            phase = 2 * np.pi * np.cumsum(f0) / sr
            voiced = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 - 0.5 * np.cos(2 * np.pi * 4 * seg))
            audio[pos:pos + len(seg)] += 0.2 * voiced
        pos += length
    return np.clip(audio, -1, 1).astype(np.float32)


def data_ppocr_rec() -> None:
    """Verified word-run crops; every other one for validation, the rest for calibration (see textlines)."""
    import textlines

    package = package_file(*PACKAGE_FILES["ppocr-rec"][:2]).parent.parent
    x, texts = textlines.text_line_samples(package)
    for split, start, count in (("val", 0, 44), ("calib", 1, 32)):
        picked = range(start, len(x), 2)[:count]
        if len(picked) < count:
            raise SystemExit(f"error: only {len(picked)} verified text lines for {split}, expected {count}")
        _save("ppocr-rec", split, x=x[list(picked)][:, None])
        (WORK / "data" / f"ppocr-rec-{split}.txt").write_text("".join(texts[i] + "\n" for i in picked))
    # the class axis (6625): CTC blank, the model's 6623 characters, the space rapidocr appends;
    # written raw (one of the characters is U+3000, an ideographic space)
    keys = textlines.labels(WORK / "models" / "ppocr_rec.onnx")
    with open(WORK / "data" / "ppocr-rec-labels.txt", "w", encoding="utf-8", newline="\n") as fh:
        fh.write("".join(k + "\n" for k in keys))


def data_pnet() -> None:
    import facecrops

    _save("facenet-pnet", "val", x=facecrops.validation())
    _save("facenet-pnet", "calib", x=facecrops.calibration())


def main() -> None:
    copy_models()
    data_onet()
    data_pnet()
    data_ppocr()
    data_ppocr_rec()
    data_fer()
    data_silero()
    print(f"prepared {len(PACKAGE_FILES)} models and their data sets in {WORK.relative_to(HERE)}/")


if __name__ == "__main__":
    sys.exit(main())
