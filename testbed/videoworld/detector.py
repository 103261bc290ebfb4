"""An analytic detector for the miniature video world (no learned weights): each frame is read by the
image world's detector (after undoing the 2× enlargement), and the clip's

- shape, colour, style and background are the majority of the frames' readings;
- motion is the shape's displacement over the clip: a least-squares line through the centroids of its
  pixels, frame by frame; under half the travel a moving shape covers is "still", otherwise the
  dominant axis and its sign;
- size is the trend of the shape's area: a least-squares line through the log areas; the end-to-start
  ratio above ``GROWTH`` is "growing", below its inverse "shrinking", between them "steady".
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from testbed.miniworld.detector import detect_with_mask
from testbed.miniworld.scenes import ATTRIBUTES as IMAGE_ATTRIBUTES

from .clips import ATTRIBUTES, TRAVEL, concept_attribute

GROWTH = 1.6            # area ratio over the clip (the world's growing shapes reach 2.8, steady ones 1.0)
MIN_FRAMES = 3          # frames with a shape needed to read motion and size


def _scene_frames(frames: np.ndarray) -> np.ndarray:
    """``(T, H, W, 3)`` frames at the scene's grid: 2×2 means when the frames are the 64-pixel ones."""
    frames = np.asarray(frames, dtype=np.float32)
    t, h, w, c = frames.shape
    if h % 2 or w % 2 or h <= 32:
        return frames
    return frames.reshape(t, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _trend(values: np.ndarray, times: np.ndarray) -> float:
    """The least-squares slope of ``values`` over ``times`` (times in [0, 1]: the change over the clip)."""
    centred = times - times.mean()
    return float((centred * (values - values.mean())).sum() / max((centred ** 2).sum(), 1e-9))


def detect_clip(frames: np.ndarray) -> dict[str, str | None]:
    """Every attribute of a ``(T, H, W, 3)`` clip in [0, 1] (``None``: not readable)."""
    return read_clip(frames)[0]


def read_clip(frames: np.ndarray) -> tuple[dict[str, str | None], list[dict[str, str | None]]]:
    """:func:`detect_clip` and each frame's reading by the image detector."""
    frames = _scene_frames(frames)
    readings, masks = zip(*(detect_with_mask(frame) for frame in frames))
    found: dict[str, str | None] = {}
    for attribute in IMAGE_ATTRIBUTES:
        votes = Counter(reading[attribute] for reading in readings)
        found[attribute] = votes.most_common(1)[0][0]
    times = np.linspace(0.0, 1.0, len(frames))
    present = np.array([mask.sum() > 0 for mask in masks])
    found["motion"] = found["size"] = None
    if present.sum() >= MIN_FRAMES:
        t = times[present]
        ys, xs = zip(*(np.nonzero(mask) for mask, p in zip(masks, present) if p))
        dx = _trend(np.array([x.mean() for x in xs]), t)
        dy = _trend(np.array([y.mean() for y in ys]), t)
        if np.hypot(dx, dy) < TRAVEL / 2:
            found["motion"] = "still"
        elif abs(dx) >= abs(dy):
            found["motion"] = "moving right" if dx > 0 else "moving left"
        else:
            found["motion"] = "moving down" if dy > 0 else "moving up"
        growth = np.exp(_trend(np.log([len(x) for x in xs]), t))
        found["size"] = "growing" if growth > GROWTH else "shrinking" if growth < 1 / GROWTH else "steady"
    assert set(found) == set(ATTRIBUTES)
    return found, list(readings)


def shows(found: dict[str, str | None], concept: str) -> bool:
    """Whether a clip's detection contains the concept value (``"red"``, ``"moving left"``, ...)."""
    return found[concept_attribute(concept)] == concept
