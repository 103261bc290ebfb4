"""Robust mode: the concept's contribution read in many contexts, so that an added word does not bring it back.

An erasure built from a few templates removes the directions the concept adds *in those prompts*. The text
encoder mixes every token with its neighbours, so the same concept in a prompt with one more word adds somewhat
different rows, partly outside the erased directions: on the miniature model one extra word ("striped", "neon")
brings an erased red back in every picture. The robust mode adds, for each of ``count`` context words, the
templates with the word in front of the prompt and right after the concept, so the concept's rows cover how it
reads among other words; its energy then spreads over more directions, which a larger ``alpha_forget`` keeps at
full strength (docs/method.md, "Robust mode").

The words are ordinary English words, drawn with a fixed seed. None of them is a word of the miniature world or
of the benchmark's word search (a test checks it), so the benchmark's attacks never meet a word the defence was
built on.
"""
from __future__ import annotations

import random

CONTEXT_WORDS = (
    "house", "river", "mountain", "forest", "city", "street", "window", "garden", "table", "chair", "book", "paper",
    "music", "dance", "friend", "family", "child", "teacher", "doctor", "market", "morning", "evening", "winter",
    "summer", "autumn", "ocean", "island", "bridge", "castle", "village", "road", "train", "car", "boat", "plane",
    "horse", "dog", "cat", "bird", "fish", "tree", "flower", "grass", "stone", "glass", "metal", "wood", "cloth",
    "water", "rain", "snow", "wind", "cloud", "storm", "quiet", "loud", "happy", "sad", "old", "young", "new",
    "ancient", "modern", "simple", "strange", "famous", "gentle", "heavy", "soft", "hard", "sharp", "smooth",
    "rough", "empty", "full", "open", "closed", "early", "late", "fast", "slow", "near", "far", "inside", "outside",
    "above", "below", "beside", "behind", "during", "after", "before", "garage", "under", "over", "standing",
    "sitting", "running", "walking", "flying", "sleeping", "reading", "photo", "portrait", "landscape", "sketch",
    "poster", "vintage", "detailed", "minimal", "abstract", "realistic", "cinematic", "studio", "museum", "kitchen",
    "office", "school", "library", "party", "festival", "holiday", "journey", "story", "dream", "memory", "mirror",
    "ribbon", "pencil", "camera", "letter", "blanket", "basket", "bottle", "candle", "lamp", "clock", "door",
    "floor", "roof",
)
MAX_CONTEXTS = len(CONTEXT_WORDS)
# The automatic alpha_forget in robust mode: the concept's energy spreads over the contexts' directions, and at the
# plain default (2) the weaker of them keep partial gains (measured on the miniature model: docs/method.md).
ROBUST_ALPHA = 10.0
CONTEXT_SEED = 0


def context_templates(templates: tuple[str, ...] | list[str], count: int, seed: int = CONTEXT_SEED) -> tuple[str, ...]:
    """``2 × count`` templates: for each of ``count`` words (drawn with ``seed``), one of ``templates`` (in turn)
    with the word in front of it and with the word right after the concept."""
    if not (isinstance(count, int) and 0 <= count <= MAX_CONTEXTS):
        raise ValueError(f"robust_contexts must be a whole number from 0 (off) to {MAX_CONTEXTS} (got {count!r}).")
    words = random.Random(seed).sample(CONTEXT_WORDS, count)
    extra = []
    for i, word in enumerate(words):
        template = templates[i % len(templates)]
        extra += [f"{word} {template}", template.replace("{}", "{} " + word)]
    return tuple(extra)
