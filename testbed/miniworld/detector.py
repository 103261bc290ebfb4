"""An analytic detector for the miniature world: which shape, colour, fill style and background a
picture shows, measured from its pixels the way the renderer made them (no learned weights).

- background: the median of a band 1 to 3 pixels in from the edge (a decoder's outermost pixels
  can carry edge artifacts), nearest background colour;
- the shape's pixels: the largest 4-connected region of pixels far from the background (specks
  of noise in a generated background are not part of it);
- colour: the bright tone of that region, nearest palette colour;
- shape: the pixels nearer that colour (or its dark tone) than the background, largest region,
  against each shape's template fitted to its bounding box, best intersection-over-union;
- style: which fill pattern (all bright; bands along rows; a checkerboard, at any phase) best
  agrees with where the region's pixels sit at the dark tone.
"""
from __future__ import annotations

import functools

import numpy as np

from .scenes import ATTRIBUTES, BACKGROUNDS, COLOURS, DARK, STRIPE, VOCABULARY, concept_attribute, fill_pattern, unit_mask

FOREGROUND_DISTANCE = 0.16     # RGB distance (0..1 scale) from the background that counts as foreground
MIN_SHAPE_PIXELS = 12
BORDER_BAND = (1, 4)           # rows and columns, counted from each edge, the background is read from

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


@functools.lru_cache(maxsize=None)
def _border_band(size: int) -> np.ndarray:
    """The pixels ``BORDER_BAND`` rows and columns in from each edge, where the background is read."""
    inner, outer = BORDER_BAND
    band = np.zeros((size, size), dtype=bool)
    band[inner:size - inner, inner:size - inner] = True
    band[outer:size - outer, outer:size - outer] = False
    return band


def _largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of ``mask``."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    height, width = mask.shape
    best, best_size, label = 0, 0, 0
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        label += 1
        labels[start] = label
        stack, size = [start], 0
        while stack:
            y, x = stack.pop()
            size += 1
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = label
                    stack.append((ny, nx))
        if size > best_size:
            best, best_size = label, size
    return labels == best if best else np.zeros_like(mask)


@functools.lru_cache(maxsize=None)
def _fill_patterns(size: int) -> dict[str, list[np.ndarray]]:
    """Each patterned style's dark-tone layout at every phase (the model may shift it by a pixel)."""
    ys, xs = np.mgrid[0:size, 0:size]
    shifts = range(2 * STRIPE)
    return {"striped": [fill_pattern("striped", ys + dy, xs) for dy in shifts],
            "checkered": [fill_pattern("checkered", ys + dy, xs + dx) for dy in shifts for dx in shifts]}


def _style(dark: np.ndarray, interior: np.ndarray) -> str:
    """The style whose fill pattern agrees best with the dark-tone pixels of ``interior``."""
    scores = {"solid": 1.0 - dark[interior].mean()}
    for style, layouts in _fill_patterns(dark.shape[0]).items():
        scores[style] = max((dark == layout)[interior].mean() for layout in layouts)
    return max(scores, key=scores.get)


def detect(image: np.ndarray) -> dict[str, str | None]:
    """``{"shape", "colour", "style", "background"}`` of one ``(H, W, 3)`` image in [0, 1]; the first
    three are ``None`` when no shape stands out from the background."""
    return detect_with_mask(image)[0]


def detect_with_mask(image: np.ndarray) -> tuple[dict[str, str | None], np.ndarray]:
    """:func:`detect` and the shape's pixels (``(H, W)`` bool, empty when no shape stands out): the
    video detector reads motion and size from them."""
    image = np.asarray(image, dtype=np.float32)
    size = image.shape[0]
    background_value = np.median(image[_border_band(size)], axis=0)
    found: dict[str, str | None] = {a: None for a in ATTRIBUTES}
    found["background"] = _nearest(background_value, _BACKGROUND_NAMES, _BACKGROUND_TABLE)

    # a first, strict mask finds the fill's colour; the final mask then takes every pixel nearer the fill
    # (bright or dark tone) than the background, so soft edges split where a blend's midpoint lies
    to_background = np.linalg.norm(image - background_value, axis=2)
    mask = _largest_region(to_background > FOREGROUND_DISTANCE)
    if mask.sum() < MIN_SHAPE_PIXELS:
        return found, np.zeros_like(mask)
    interior = _eroded(mask)
    if interior.sum() < MIN_SHAPE_PIXELS // 2:
        interior = mask
    pixels = image[interior]
    brightness = pixels.mean(axis=1)
    # the bright tone: pixels above the midpoint between the top brightness and its dark tone
    bright = pixels[brightness >= np.percentile(brightness, 90) * (1 + DARK) / 2].mean(axis=0)
    found["colour"] = _nearest(bright, _COLOUR_NAMES, _COLOUR_TABLE)
    to_fill = np.minimum(np.linalg.norm(image - bright, axis=2), np.linalg.norm(image - bright * DARK, axis=2))
    mask = _largest_region(to_fill < to_background)
    if mask.sum() < MIN_SHAPE_PIXELS:
        return {**found, "colour": None}, np.zeros_like(mask)
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
    dark = np.linalg.norm(image - bright * DARK, axis=2) < np.linalg.norm(image - bright, axis=2)
    found["style"] = _style(dark, interior)
    return found, mask


def detect_batch(images: np.ndarray) -> list[dict[str, str | None]]:
    """:func:`detect` over an ``(N, H, W, 3)`` batch (a ComfyUI IMAGE as numpy)."""
    return [detect(image) for image in images]


def shows(found: dict[str, str | None], concept: str) -> bool:
    """Whether a detection contains the concept value (``"red"``, ``"ring"``, ...)."""
    return found[concept_attribute(concept)] == concept
