"""The worlds the benchmark runs on: the miniature image world (SD1.x-style UNet) and the miniature video
world (Wan 2.1 DiT). Each says what its concepts are, how prompts are written, how its pictures or clips
are read, which model draws them and which tasks and attacks apply to it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cure_core.presets import PRESETS
from testbed.miniworld import detector as image_detector
from testbed.miniworld import scenes as image_scenes
from testbed.videoworld import clips as video_clips
from testbed.videoworld import detector as video_detector

ATTACKS = ("word search", "optimisation", "inversion", "resurgence")

# task -> (forget sets, run one after the other and averaged; retain list)
Tasks = dict[str, tuple[list[list[str]], list[str]]]

IMAGE_TASKS: Tasks = {
    "erase 1": ([["red"], ["circle"], ["striped"], ["black"]], []),      # the first `single_concepts` of them
    "erase 5": ([["red", "circle", "striped", "sand", "purple"]], []),
    "erase 20": ([["red", "orange", "yellow", "lime", "green", "teal", "purple", "pink", "brown", "circle", "diamond",
                   "cross", "ring", "star", "moon", "striped", "checkered", "black", "gray", "sand"]], []),
    "erase 1, keep neighbour": ([["red"]], ["orange"]),
    # Single concepts no default was chosen on, one run each (the defaults were chosen on red and circle).
    "erase 1, other concepts": ([["teal"], ["moon"], ["checkered"], ["gray"], ["brown"], ["cross"]], []),
    # The miniature world's preset, as the Concept Preset node hands it to the erase node.
    "preset: warm colours": ([list(PRESETS["warm colours"].forget)], list(PRESETS["warm colours"].retain)),
}

VIDEO_TASKS: Tasks = {
    "erase 1": IMAGE_TASKS["erase 1"],
    # What only video has: a motion and a change over time, one run each.
    "erase 1, motion": ([["moving left"], ["growing"]], []),
    "erase 5": ([["red", "circle", "striped", "sand", "moving left"]], []),
    "erase 1, keep neighbour": IMAGE_TASKS["erase 1, keep neighbour"],
    "erase 1, keep neighbour (motion)": ([["moving left"]], ["moving right"]),
    "erase 1, other concepts": IMAGE_TASKS["erase 1, other concepts"],
    "preset: warm colours": IMAGE_TASKS["preset: warm colours"],
}


@dataclass(frozen=True)
class World:
    name: str
    vocabulary: dict[str, dict[str, tuple[str, ...]]]
    templates: tuple[str, ...]
    neighbours: dict[str, str]
    prompt_for: Callable[..., str]
    detect: Callable[[np.ndarray], dict[str, str | None]]      # one picture, or one clip
    model_module: str                 # the testbed module with the model file, its loader and LATENT_SHAPE
    loader: str                       # the module's function that gives (MODEL, CLIP, VAE, metadata) of a file
    erase_templates: str              # what the erasure methods are given: the concept alone and in the world's phrasing
    neutral_prompts: tuple[str, ...]  # the refusal vector's neutral prompts
    tasks: Tasks = field(default_factory=dict)
    attacks: tuple[str, ...] = ATTACKS

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(self.vocabulary)

    def concept_attribute(self, concept: str) -> str:
        for attribute, values in self.vocabulary.items():
            if concept in values:
                return attribute
        raise KeyError(f"{concept!r} is not a concept of the miniature {self.name} world.")

    def chance_level(self, concept: str) -> float:
        return 1.0 / len(self.vocabulary[self.concept_attribute(concept)])

    def concepts(self) -> list[str]:
        return [value for values in self.vocabulary.values() for value in values]

    def detect_batch(self, outputs: np.ndarray) -> list[dict[str, str | None]]:
        """Every picture (``[N, H, W, 3]``) or clip (``[N, T, H, W, 3]``) of a sampler batch, read."""
        return [self.detect(output) for output in outputs]

    def shows(self, found: dict[str, str | None], concept: str) -> bool:
        return found[self.concept_attribute(concept)] == concept

    def load(self, model_file: Path | None = None):
        """``(MODEL, CLIP, VAE)`` of the world's trained model (default: the pack's committed file)."""
        module = self._module()
        model, clip, vae, _ = getattr(module, self.loader)(model_file or module.MODEL_FILE)
        return model, clip, vae

    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self._module().LATENT_SHAPE)

    def _module(self):
        from scripts.comfy_env import pack_module
        return pack_module(self.model_module)


IMAGE = World("image", image_scenes.VOCABULARY, image_scenes.TEMPLATES, image_scenes.NEIGHBOURS, image_scenes.prompt_for,
              image_detector.detect, "testbed.miniature", "load_miniature", "{}\na {} shape\na drawing of a {} shape",
              ("a shape", "a drawing of a shape", "a shape on a background"), IMAGE_TASKS)
# The learned attacks and the LoRA fine-tune are written for the image world's CLIP and pictures; the word search
# applies to any world.
VIDEO = World("video", video_clips.VOCABULARY, video_clips.TEMPLATES, video_clips.NEIGHBOURS, video_clips.prompt_for,
              video_detector.detect_clip, "testbed.miniature_video", "load_miniature_video",
              "{}\na {} shape\na video of a {} shape",
              ("a shape", "a video of a shape", "a shape on a background"), VIDEO_TASKS, attacks=("word search",))
WORLDS = {world.name: world for world in (IMAGE, VIDEO)}
