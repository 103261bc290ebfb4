"""From the text a user types to the prompts that get encoded, and which token rows to keep.

A concept list is one concept per line. Each concept is expanded through prompt
templates (``{}`` marks where the concept goes) so that its embedding is seen in the
contexts a sampler will see it in.
"""
from __future__ import annotations

from dataclasses import dataclass

# Default templates per kind of concept (the kind also picks the paper's default α).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "style": ("{}", "a painting in the style of {}", "an artwork by {}", "a picture in the style of {}"),
    "object": ("{}", "a photo of {}", "a picture of {}", "an image of {}"),
    "identity": ("{}", "a photo of {}", "a portrait of {}", "a picture of {}"),
    "explicit content": ("{}", "a photo of {}", "an image showing {}", "a picture with {}"),
    "raw text": ("{}",),
}
CONCEPT_KINDS = tuple(TEMPLATES)

# CURE's reported α: 2 for styles, objects and identities, 5 for explicit content.
DEFAULT_ALPHA = {"style": 2.0, "object": 2.0, "identity": 2.0, "explicit content": 5.0, "raw text": 2.0}

# Which token rows of each encoded prompt stand for the concept.
TOKEN_SELECTIONS = ("concept + end token", "concept tokens", "all prompt tokens")


def parse_concepts(text: str) -> list[str]:
    """One concept per line; blank lines and ``#`` comments are ignored, duplicates dropped."""
    concepts: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and line not in concepts:
            concepts.append(line)
    return concepts


def parse_templates(text: str, kind: str) -> tuple[str, ...]:
    """User templates (one per line, each with one ``{}``), or the kind's defaults when empty."""
    if kind not in TEMPLATES:
        raise ValueError(f"Unknown concept kind {kind!r}; choose one of {', '.join(CONCEPT_KINDS)}.")
    templates = tuple(parse_concepts(text))
    if not templates:
        return TEMPLATES[kind]
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(f"Template {template!r} must contain exactly one '{{}}' where the concept goes.")
    return templates


def expand(concepts: list[str], templates: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """``(concept, prefix, suffix)`` for every concept × template: the prompt is prefix + concept + suffix."""
    prompts = []
    for concept in concepts:
        for template in templates:
            prefix, suffix = template.split("{}")
            prompts.append((concept, prefix, suffix))
    return prompts


@dataclass(frozen=True)
class PromptTokens:
    """Token positions of one encoded prompt (indices into its rows of the encoder output)."""
    concept: list[int]     # the concept's own tokens
    content: list[int]     # every token of the prompt text (no start, end or padding)
    end: int | None        # the end-of-text token after the prompt, if the encoder has one

    def select(self, mode: str) -> list[int]:
        if mode == "concept tokens":
            return list(self.concept)
        if mode == "concept + end token":
            return list(self.concept) + ([self.end] if self.end is not None else [])
        if mode == "all prompt tokens":
            return list(self.content) + ([self.end] if self.end is not None else [])
        raise ValueError(f"Unknown token selection {mode!r}; choose one of {', '.join(TOKEN_SELECTIONS)}.")
