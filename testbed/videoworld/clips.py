"""Short clips of the miniature world: one shape per clip with the image world's colour, fill style,
shape and background, plus two attributes only video has,

- **motion**: moving left, right, up or down by ``TRAVEL`` pixels over the clip, or still;
- **size**: growing, shrinking or steady (the radius changes linearly over the clip).

Every attribute is drawn independently and uniformly (chance level ``1 / len(values)``, as in the
image world). Frames are rendered by the image world's renderer at 32×32 and enlarged 2× (nearest),
so a clip is ``FRAMES`` frames of 64×64: Wan 2.1's video autoencoder compresses 8× in space and 4× in
time, and 8×8×3 latents keep the 2-pixel stripes of the 32-pixel scene readable.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np

from testbed.miniworld import scenes as image_world

FRAMES = 9                      # 1 + 4k: Wan's causal autoencoder keeps the first frame and compresses 4 to 1
SCENE_SIZE = image_world.IMAGE_SIZE       # the renderer's and detector's grid (32)
UPSCALE = 2
FRAME_SIZE = SCENE_SIZE * UPSCALE         # 64
TRAVEL = 10.0                   # pixels of the 32-pixel scene a moving shape covers over the clip
RADIUS = {"growing": (5.0, 8.0), "shrinking": (8.0, 5.0)}      # start, end
STEADY_RADIUS = (5.5, 7.5)      # a steady shape's radius is drawn from this range

MOTIONS: dict[str, tuple[float, float]] = {       # unit direction of travel (x right, y down)
    "moving left": (-1.0, 0.0), "moving right": (1.0, 0.0), "moving up": (0.0, -1.0), "moving down": (0.0, 1.0),
    "still": (0.0, 0.0)}

VOCABULARY: dict[str, dict[str, tuple[str, ...]]] = {
    **image_world.VOCABULARY,
    "motion": {"moving left": ("moving left", "sliding left"), "moving right": ("moving right", "sliding right"),
               "moving up": ("moving up", "rising"), "moving down": ("moving down", "falling"),
               "still": ("still", "motionless")},
    "size": {"growing": ("growing", "expanding"), "shrinking": ("shrinking", "contracting"),
             "steady": ("steady", "unchanging")},
}
ATTRIBUTES = tuple(VOCABULARY)
VIDEO_ATTRIBUTES = ("motion", "size")
NEIGHBOURS = {**image_world.NEIGHBOURS, "moving left": "moving right", "moving right": "moving left",
              "moving up": "moving down", "moving down": "moving up", "still": "moving left",
              "growing": "shrinking", "shrinking": "growing", "steady": "growing"}

# A bracketed segment is left out when the attribute it names is not in the prompt; an unnamed shape
# is called "shape".
TEMPLATES = (
    "a [{size} ][{style} ][{colour} ]{shape}[ {motion}][ on a {background} background]",
    "{colour} {shape}[, {style}][, {motion}][, {size}][, {background} backdrop]",
    "a video of a [{style} ][{colour} ]{shape}[ {motion}][, {size},][ against a {background} background]",
    "[{background} background with ]a [{colour} ][{style} ]{shape}[ that is {size}][, {motion}]",
)
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
_FIELD = re.compile(r"\{(\w+)\}")


def concept_attribute(concept: str) -> str:
    for attribute, values in VOCABULARY.items():
        if concept in values:
            return attribute
    raise KeyError(f"{concept!r} is not a concept of the miniature video world; concepts: {', '.join(all_concepts())}.")


def all_concepts() -> list[str]:
    return [value for values in VOCABULARY.values() for value in values]


def chance_level(concept: str) -> float:
    return 1.0 / len(VOCABULARY[concept_attribute(concept)])


@dataclass(frozen=True)
class ClipScene:
    """What a clip shows, where the shape starts (centre, 32-pixel scene) and its radius at the start."""
    shape: str
    colour: str
    style: str
    background: str
    motion: str
    size: str
    start: tuple[float, float] = (16.0, 16.0)
    radius: float = 6.0

    def value(self, attribute: str) -> str:
        return getattr(self, attribute)

    def radius_at(self, t: float) -> float:
        """The radius at ``t`` in [0, 1] (start to end of the clip)."""
        if self.size == "steady":
            return self.radius
        start, end = RADIUS[self.size]
        return start + (end - start) * t

    def centre_at(self, t: float) -> tuple[float, float]:
        dx, dy = MOTIONS[self.motion]
        return self.start[0] + dx * TRAVEL * t, self.start[1] + dy * TRAVEL * t

    def frame(self, index: int, frames: int = FRAMES) -> image_world.Scene:
        t = index / (frames - 1)
        return image_world.Scene(self.shape, self.colour, self.style, self.background,
                                 centre=self.centre_at(t), radius=self.radius_at(t))


def random_clip_scene(rng: random.Random, **fixed: str) -> ClipScene:
    """A uniform clip; ``fixed`` pins attributes (``motion="moving left"``). The start is drawn so that
    the shape stays a pixel inside the frame over the whole clip."""
    values = {a: fixed.get(a) or rng.choice(list(VOCABULARY[a])) for a in ATTRIBUTES}
    radius = rng.uniform(*STEADY_RADIUS) if values["size"] == "steady" else RADIUS[values["size"]][0]
    largest = radius if values["size"] == "steady" else max(RADIUS[values["size"]])
    dx, dy = MOTIONS[values["motion"]]
    low = largest + 1.0
    high = SCENE_SIZE - largest - 1.0
    x = rng.uniform(low - min(dx, 0) * TRAVEL, high - max(dx, 0) * TRAVEL)
    y = rng.uniform(low - min(dy, 0) * TRAVEL, high - max(dy, 0) * TRAVEL)
    return ClipScene(**values, start=(x, y), radius=radius)


def prompt_for(named: dict[str, str], template: str, words: dict[str, str] | None = None) -> str:
    """A prompt naming the values in ``named`` (attribute -> value) with ``words`` (value -> the synonym
    to use, default the canonical word); segments naming an open attribute are left out."""
    words = words or {}
    parts = {a: words.get(named[a]) or VOCABULARY[a][named[a]][0] for a in named}
    parts.setdefault("shape", "shape")
    text = _SEGMENT.sub(lambda m: m.group(1) if all(f in parts for f in _FIELD.findall(m.group(1))) else "", template)
    text = " ".join(text.format(**{a: parts.get(a, "") for a in ATTRIBUTES}).split())
    return text.replace(" ,", ",").strip(", ")


def random_prompt(rng: random.Random, scene: ClipScene, keep: dict[str, float] | None = None) -> str:
    """A training prompt for ``scene``: each attribute named with probability ``keep[attribute]``, by a
    uniformly drawn synonym, through a uniformly drawn template."""
    return random_named_prompt(rng, scene, keep)[0]


def random_named_prompt(rng: random.Random, scene: ClipScene,
                        keep: dict[str, float] | None = None) -> tuple[str, dict[str, str]]:
    """:func:`random_prompt` and the values it names (attribute -> value)."""
    keep = keep or {"shape": 0.85, "colour": 0.85, "style": 0.7, "background": 0.7, "motion": 0.85, "size": 0.7}
    named = {a: scene.value(a) for a in ATTRIBUTES if rng.random() < keep[a]}
    words = {v: rng.choice(VOCABULARY[a][v]) for a, v in named.items()}
    return prompt_for(named, rng.choice(TEMPLATES), words), named


def render_clip(scene: ClipScene, frames: int = FRAMES) -> np.ndarray:
    """The clip as ``(frames, 64, 64, 3)`` floats in [0, 1]."""
    small = np.stack([image_world.render(scene.frame(i, frames)) for i in range(frames)])
    return small.repeat(UPSCALE, axis=1).repeat(UPSCALE, axis=2)
