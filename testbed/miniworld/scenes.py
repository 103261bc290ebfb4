"""A procedural world of nameable concepts: one shape per picture, with a colour, a fill style and a
background, each named by a few synonyms and written through several prompt templates.

Every attribute is drawn independently and uniformly, so when a prompt leaves one out (or an erasure
removes it) the model's best guess is each value with probability ``1 / len(values)``: the chance
level the benchmark reports. Some values are close neighbours (red and orange, circle and ring,
striped and checkered) so that collateral damage shows.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 32

# attribute -> value -> words (the first is the canonical name the erasure nodes are given)
VOCABULARY: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": {
        "circle": ("circle", "disc"),
        "square": ("square", "block"),
        "triangle": ("triangle", "wedge"),
        "diamond": ("diamond", "rhombus"),
        "cross": ("cross", "plus"),
        "ring": ("ring", "donut"),
        "star": ("star", "starburst"),
        "moon": ("moon", "crescent"),
    },
    "colour": {
        "red": ("red", "crimson", "scarlet"),
        "orange": ("orange", "tangerine"),
        "yellow": ("yellow", "golden", "lemon"),
        "lime": ("lime", "chartreuse"),
        "green": ("green", "emerald"),
        "teal": ("teal", "turquoise"),
        "blue": ("blue", "azure", "cobalt"),
        "purple": ("purple", "violet"),
        "pink": ("pink", "rose"),
        "brown": ("brown", "chocolate"),
    },
    "style": {
        "solid": ("solid", "plain"),
        "striped": ("striped", "stripy"),
        "checkered": ("checkered", "checkerboard"),
    },
    "background": {
        "white": ("white", "snowy"),
        "black": ("black", "dark"),
        "gray": ("gray", "grey"),
        "sand": ("sand", "beige"),
    },
}
ATTRIBUTES = tuple(VOCABULARY)

# concept -> its close neighbour (used for the "erase one, keep its neighbour" task)
NEIGHBOURS = {"red": "orange", "orange": "red", "yellow": "lime", "lime": "yellow", "green": "teal", "teal": "green",
              "blue": "teal", "purple": "pink", "pink": "purple", "brown": "orange", "circle": "ring", "ring": "circle",
              "square": "diamond", "diamond": "square", "triangle": "star", "star": "triangle", "cross": "star",
              "moon": "circle", "striped": "checkered", "checkered": "striped", "solid": "striped", "white": "gray",
              "gray": "white", "black": "gray", "sand": "white"}

COLOURS = {"red": (215, 40, 40), "orange": (240, 135, 30), "yellow": (235, 215, 40), "lime": (150, 220, 50),
           "green": (40, 150, 60), "teal": (30, 160, 160), "blue": (45, 85, 215), "purple": (135, 60, 190),
           "pink": (235, 120, 185), "brown": (130, 80, 40)}
BACKGROUNDS = {"white": (245, 245, 245), "black": (15, 15, 15), "gray": (125, 125, 125), "sand": (225, 205, 160)}
DARK = 0.55          # the second tone of striped and checkered fills is the colour times this
STRIPE = 2           # pixels per band of the striped and checkered fills

TEMPLATES = (
    "a {style} {colour} {shape} on a {background} background",
    "{colour} {shape}, {style}, {background} backdrop",
    "a drawing of a {style} {colour} {shape} against a {background} background",
    "{background} background with a {colour} {style} {shape}",
)


def concept_attribute(concept: str) -> str:
    """The attribute a concept value belongs to (``"red"`` -> ``"colour"``)."""
    for attribute, values in VOCABULARY.items():
        if concept in values:
            return attribute
    raise KeyError(f"{concept!r} is not a concept of the miniature world; concepts: {', '.join(all_concepts())}.")


def all_concepts() -> list[str]:
    return [value for values in VOCABULARY.values() for value in values]


def chance_level(concept: str) -> float:
    """How often a concept shows when nothing in the prompt asks for it (values are uniform)."""
    return 1.0 / len(VOCABULARY[concept_attribute(concept)])


@dataclass(frozen=True)
class Scene:
    """What a picture shows (``None``: the prompt leaves the attribute open) and where the shape sits."""
    shape: str
    colour: str
    style: str
    background: str
    centre: tuple[float, float] = (16.0, 16.0)
    radius: float = 10.0

    def value(self, attribute: str) -> str:
        return getattr(self, attribute)


def random_scene(rng: random.Random, **fixed: str) -> Scene:
    """A uniform scene; ``fixed`` pins attributes (``colour="red"``)."""
    values = {a: fixed.get(a) or rng.choice(list(VOCABULARY[a])) for a in ATTRIBUTES}
    radius = rng.uniform(8.0, 11.0)
    centre = (rng.uniform(radius + 1, IMAGE_SIZE - radius - 1), rng.uniform(radius + 1, IMAGE_SIZE - radius - 1))
    return Scene(**values, centre=centre, radius=radius)


def prompt_for(named: dict[str, str], template: str, words: dict[str, str] | None = None) -> str:
    """A prompt naming the values in ``named`` (attribute -> value) with ``words`` (value -> the synonym
    to use, default the canonical word); open attributes are left out of the sentence."""
    words = words or {}
    parts = {a: (words.get(named[a]) or VOCABULARY[a][named[a]][0]) if a in named else "" for a in ATTRIBUTES}
    if not parts["shape"]:
        parts["shape"] = "shape"
    text = template
    if not parts["background"]:          # drop the whole background phrase, not just the word
        for phrase in (" on a {background} background", ", {background} backdrop",
                       " against a {background} background", "{background} background with "):
            text = text.replace(phrase, "")
    text = " ".join(text.format(**parts).split())
    while " ," in text or ",," in text:
        text = text.replace(" ,", ",").replace(",,", ",")
    return text.strip(", ")


def random_prompt(rng: random.Random, scene: Scene, keep: dict[str, float] | None = None) -> str:
    """A training prompt for ``scene``: each attribute named with probability ``keep[attribute]``,
    by a uniformly drawn synonym, through a uniformly drawn template."""
    keep = keep or {"shape": 0.85, "colour": 0.85, "style": 0.7, "background": 0.7}
    named = {a: scene.value(a) for a in ATTRIBUTES if rng.random() < keep[a]}
    words = {v: rng.choice(VOCABULARY[a][v]) for a, v in named.items()}
    return prompt_for(named, rng.choice(TEMPLATES), words)


# ---- rendering ----------------------------------------------------------------------------------

def _star_polygon(points: int = 5, inner: float = 0.5) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _inside_polygon(u: np.ndarray, v: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over the grid."""
    inside = np.zeros(u.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(polygon, np.roll(polygon, -1, axis=0)):
        crosses = (y0 > v) != (y1 > v)
        x_at = x0 + (v - y0) * (x1 - x0) / np.where(y1 == y0, 1e-9, y1 - y0)
        inside ^= crosses & (u < x_at)
    return inside


_STAR = _star_polygon()


def unit_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The shape in unit coordinates (``u`` right, ``v`` down, the shape spans about [-1, 1])."""
    r2 = u * u + v * v
    if shape == "circle":
        return r2 <= 1.0
    if shape == "square":
        return np.maximum(abs(u), abs(v)) <= 0.85
    if shape == "triangle":
        return (v <= 0.8) & (abs(u) <= (v + 0.95) * 0.58)
    if shape == "diamond":
        return abs(u) + abs(v) <= 1.05
    if shape == "cross":
        return ((abs(u) <= 0.33) & (abs(v) <= 0.95)) | ((abs(v) <= 0.33) & (abs(u) <= 0.95))
    if shape == "ring":
        return (r2 <= 1.0) & (r2 >= 0.55 ** 2)
    if shape == "star":
        return _inside_polygon(u, v * 1.05 - 0.1, _STAR * 1.1)
    if shape == "moon":
        return (r2 <= 1.0) & ((u - 0.5) ** 2 + (v + 0.25) ** 2 > 0.8 ** 2)
    raise KeyError(f"unknown shape {shape!r}")


def fill_pattern(style: str, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """True where the fill shows its dark tone."""
    if style == "solid":
        return np.zeros(ys.shape, dtype=bool)
    if style == "striped":
        return (ys // STRIPE) % 2 == 1
    if style == "checkered":
        return ((ys // STRIPE) + (xs // STRIPE)) % 2 == 1
    raise KeyError(f"unknown style {style!r}")


def render(scene: Scene, size: int = IMAGE_SIZE) -> np.ndarray:
    """The scene as an ``(size, size, 3)`` float image in [0, 1] (hard edges: the ground truth)."""
    ys, xs = np.mgrid[0:size, 0:size]
    u = (xs + 0.5 - scene.centre[0]) / scene.radius
    v = (ys + 0.5 - scene.centre[1]) / scene.radius
    mask = unit_mask(scene.shape, u, v)
    colour = np.array(COLOURS[scene.colour], dtype=np.float32)
    fill = np.where(fill_pattern(scene.style, ys, xs)[..., None], colour * DARK, colour)
    image = np.where(mask[..., None], fill, np.array(BACKGROUNDS[scene.background], dtype=np.float32))
    return image.astype(np.float32) / 255.0
