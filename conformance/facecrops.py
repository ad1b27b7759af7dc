"""Real photo crops for the face detector (PNet, 96 x 96): scikit-image's two sample photos with faces.

``astronaut`` (Eileen Collins) and ``camera`` (the cameraman) are the only scikit-image/scikit-learn
photos with human faces. Each face crop holds the whole face at a random side of 14-36 px (the sizes
PNet's 12 px window detects) at a random place; the face boxes below are where PNet itself, run over
an image pyramid of the full photo, puts them. Crops of photos without faces (chelsea, coffee, ...)
add PNet's real false positives. MTCNN normalisation: (x - 127.5) / 128.
"""
from __future__ import annotations

import numpy as np

SIZE = 96
FACES = {"astronaut": (175, 65, 255, 170), "camera": (170, 90, 270, 200)}  # x0, y0, x1, y1 in the photo
NO_FACES = ("chelsea", "coffee", "rocket", "immunohistochemistry")


def _rgb(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)().astype(np.float32)
    return np.stack([img] * 3, axis=-1) if img.ndim == 2 else img[..., :3]


def _resized(crop: np.ndarray) -> np.ndarray:
    from skimage.transform import resize

    return resize(crop, (SIZE, SIZE), preserve_range=True, anti_aliasing=True)


def face_crops(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        name = list(FACES)[i % len(FACES)]
        img, (x0, y0, x1, y1) = _rgb(name), FACES[name]
        side = min(SIZE * (x1 - x0) / rng.uniform(14, 36), *img.shape[:2])
        # the crop's corner anywhere that keeps the face inside it
        cx = rng.uniform(x1 - side, x0) if side > x1 - x0 else x0
        cy = rng.uniform(y1 - side, y0) if side > y1 - y0 else y0
        cx, cy = int(np.clip(cx, 0, img.shape[1] - side)), int(np.clip(cy, 0, img.shape[0] - side))
        out.append(_resized(img[cy:cy + int(side), cx:cx + int(side)]))
    return out


def other_crops(names, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        img = _rgb(names[i % len(names)])
        h, w = img.shape[:2]
        side = int(rng.integers(SIZE, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        out.append(_resized(img[y:y + side, x:x + side]))
    return out


def normalised(crops: list[np.ndarray]) -> np.ndarray:
    """[N, 1, 3, 96, 96] float32, MTCNN's (x - 127.5) / 128."""
    x = (np.stack(crops).astype(np.float32) - 127.5) * 0.0078125
    return np.transpose(x, (0, 3, 1, 2))[:, None].astype(np.float32)


def validation() -> np.ndarray:
    return normalised(face_crops(48, seed=11) + other_crops(NO_FACES, 16, seed=12))


def calibration() -> np.ndarray:
    return normalised(face_crops(48, seed=21) + other_crops((*NO_FACES, "astronaut", "camera"), 48, seed=22))
