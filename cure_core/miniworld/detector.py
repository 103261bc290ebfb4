"""An analytic detector for the miniature world: which shape, colour, fill style and background a
picture shows, measured from its pixels the way the renderer made them (no learned weights).

- background: the median of the 2-pixel border, nearest background colour;
- colour: the bright tone of the pixels far from the background, nearest palette colour;
- shape: the mask of pixels nearer that colour (or its dark tone) than the background, against each
  shape's template fitted to the mask's bounding box, best intersection-over-union;
- style: how many interior pixels sit at the dark tone, and whether the dark bands run along rows
  (striped) or alternate both ways (checkered).
"""
from __future__ import annotations

import functools

import numpy as np

from .scenes import ATTRIBUTES, BACKGROUNDS, COLOURS, DARK, VOCABULARY, concept_attribute, unit_mask

FOREGROUND_DISTANCE = 0.16     # RGB distance (0..1 scale) from the background that counts as foreground
MIN_SHAPE_PIXELS = 12
SOLID_BELOW = 0.2              # share of dark interior pixels under which a fill counts as solid
STRIPED_MARGIN = 0.15          # row agreement minus column agreement above which dark bands are stripes

_COLOUR_NAMES = list(COLOURS)
_COLOUR_TABLE = np.array([COLOURS[c] for c in _COLOUR_NAMES], dtype=np.float32) / 255.0
_BACKGROUND_NAMES = list(BACKGROUNDS)
_BACKGROUND_TABLE = np.array([BACKGROUNDS[b] for b in _BACKGROUND_NAMES], dtype=np.float32) / 255.0


@functools.lru_cache(maxsize=None)
def _template_box(shape: str) -> tuple[float, float, float, float]:
    """The unit-coordinate bounding box of a shape's template (measured on a fine grid)."""
    grid = np.linspace(-1.3, 1.3, 521)
    u, v = np.meshgrid(grid, grid)
    inside = unit_mask(shape, u, v)
    return float(u[inside].min()), float(u[inside].max()), float(v[inside].min()), float(v[inside].max())


def _fitted_template(shape: str, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The shape's template stretched onto the pixel box ``(y0, y1, x0, x1)`` (inclusive)."""
    y0, y1, x0, x1 = box
    u0, u1, v0, v1 = _template_box(shape)
    ys, xs = np.mgrid[0:size, 0:size]
    u = u0 + (xs + 0.5 - x0) / (x1 + 1 - x0) * (u1 - u0)
    v = v0 + (ys + 0.5 - y0) / (y1 + 1 - y0) * (v1 - v0)
    return unit_mask(shape, u, v)


def _nearest(value: np.ndarray, names: list[str], table: np.ndarray) -> str:
    return names[int(np.argmin(np.linalg.norm(table - value[None], axis=1)))]


def _eroded(mask: np.ndarray) -> np.ndarray:
    """Pixels whose four neighbours are all in ``mask`` (the image border never is)."""
    inner = np.zeros_like(mask)
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return inner


def detect(image: np.ndarray) -> dict[str, str | None]:
    """``{"shape", "colour", "style", "background"}`` of one ``(H, W, 3)`` image in [0, 1]; the first
    three are ``None`` when no shape stands out from the background."""
    image = np.asarray(image, dtype=np.float32)
    size = image.shape[0]
    border = np.concatenate([image[:2].reshape(-1, 3), image[-2:].reshape(-1, 3),
                             image[:, :2].reshape(-1, 3), image[:, -2:].reshape(-1, 3)])
    background_value = np.median(border, axis=0)
    found: dict[str, str | None] = {a: None for a in ATTRIBUTES}
    found["background"] = _nearest(background_value, _BACKGROUND_NAMES, _BACKGROUND_TABLE)

    # a first, strict mask finds the fill's colour; the final mask then takes every pixel nearer the fill
    # (bright or dark tone) than the background, so soft edges split where a blend's midpoint lies
    to_background = np.linalg.norm(image - background_value, axis=2)
    mask = to_background > FOREGROUND_DISTANCE
    if mask.sum() < MIN_SHAPE_PIXELS:
        return found
    interior = _eroded(mask)
    if interior.sum() < MIN_SHAPE_PIXELS // 2:
        interior = mask
    pixels = image[interior]
    brightness = pixels.mean(axis=1)
    # the bright tone: pixels above the midpoint between the top brightness and its dark tone
    bright = pixels[brightness >= np.percentile(brightness, 90) * (1 + DARK) / 2].mean(axis=0)
    found["colour"] = _nearest(bright, _COLOUR_NAMES, _COLOUR_TABLE)
    to_fill = np.minimum(np.linalg.norm(image - bright, axis=2), np.linalg.norm(image - bright * DARK, axis=2))
    mask = to_fill < to_background
    if mask.sum() < MIN_SHAPE_PIXELS:
        return {**found, "colour": None}
    rows, cols = np.nonzero(mask)
    box = (rows.min(), rows.max(), cols.min(), cols.max())
    scores = {}
    for shape in VOCABULARY["shape"]:
        template = _fitted_template(shape, box, size)
        scores[shape] = (template & mask).sum() / max((template | mask).sum(), 1)
    found["shape"] = max(scores, key=scores.get)
    interior = _eroded(mask)
    if interior.sum() < MIN_SHAPE_PIXELS // 2:
        interior = mask
    pixels = image[interior]

    dark = np.zeros(mask.shape, dtype=bool)
    dark[interior] = (np.linalg.norm(pixels - bright * DARK, axis=1) < np.linalg.norm(pixels - bright, axis=1))
    if dark[interior].mean() < SOLID_BELOW:
        found["style"] = "solid"
    else:
        horizontal = interior[:, :-1] & interior[:, 1:]
        vertical = interior[:-1, :] & interior[1:, :]
        along_rows = (dark[:, :-1] == dark[:, 1:])[horizontal].mean()
        along_cols = (dark[:-1, :] == dark[1:, :])[vertical].mean()
        found["style"] = "striped" if along_rows - along_cols > STRIPED_MARGIN else "checkered"
    return found


def detect_batch(images: np.ndarray) -> list[dict[str, str | None]]:
    """:func:`detect` over an ``(N, H, W, 3)`` batch (a ComfyUI IMAGE as numpy)."""
    return [detect(image) for image in images]


def shows(found: dict[str, str | None], concept: str) -> bool:
    """Whether a detection contains the concept value (``"red"``, ``"ring"``, ...)."""
    return found[concept_attribute(concept)] == concept
