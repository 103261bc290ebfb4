"""From the text a user types to the prompts that get encoded, and which token rows to keep.

A concept list is one concept per line. Each concept is expanded through prompt
templates (``{}`` marks where the concept goes) so that its embedding is seen in the
contexts a sampler will see it in.
"""
from __future__ import annotations

from dataclasses import dataclass

from .checks import check_choice

import torch

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

# Which token rows of each encoded prompt stand for the concept. "concept contribution" (the default) takes
# every row the layers read (start, text, end and padding tokens) minus the same row of the template without
# the concept (paired by :func:`pair_rows`): what the concept adds to each row, without what every prompt of
# the template shares. The other three are rows of the prompt itself, as CURE's paper stacks them.
CONTRIBUTION, CONCEPT_AND_END = "concept contribution", "concept + end token"
TOKEN_SELECTIONS = (CONTRIBUTION, CONCEPT_AND_END, "concept tokens", "all prompt tokens")


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
    check_choice(kind, CONCEPT_KINDS, "concept kind")
    templates = tuple(parse_concepts(text))
    return check_templates(templates) if templates else TEMPLATES[kind]


def check_templates(templates: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The templates, or an error naming the first that does not hold exactly one ``{}``."""
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(f"Template {template!r} must contain exactly one '{{}}' where the concept goes.")
    return tuple(templates)


def expand(concepts: list[str], templates: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """``(concept, prefix, suffix)`` for every concept × template: the prompt is prefix + concept + suffix."""
    prompts = []
    for concept in concepts:
        for template in templates:
            prefix, suffix = template.split("{}")
            prompts.append((concept, prefix, suffix))
    return prompts


def without_concept(prefix: str, suffix: str) -> str:
    """The template's prompt with the concept left out (``"a painting by {}"`` -> ``"a painting by"``)."""
    return " ".join(f"{prefix} {suffix}".split())


@dataclass(frozen=True)
class PromptTokens:
    """Token positions of one encoded prompt (indices into its rows of the encoder output)."""
    concept: list[int]     # the concept's own tokens
    content: list[int]     # every token of the prompt text (no start, end or padding)
    end: int | None        # the end-of-text token after the prompt, if the encoder has one

    def select(self, mode: str) -> list[int]:
        if mode == "concept tokens":
            return list(self.concept)
        if mode == CONCEPT_AND_END:
            return list(self.concept) + ([self.end] if self.end is not None else [])
        if mode == "all prompt tokens":
            return list(self.content) + ([self.end] if self.end is not None else [])
        raise ValueError(f"Unknown token selection {mode!r}; choose one of {', '.join(TOKEN_SELECTIONS)}.")


def pair_rows(with_ids: list, with_rows: torch.Tensor, without_ids: list, without_rows: torch.Tensor,
              added_span: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of two prompts that differ only by the concept, paired up.

    Tokens the prompts share at the start and at the end (the end token included) pair one to
    one; the differing middle spans pair as their means when both prompts have one. With
    ``added_span``, a span only the first prompt has (a concept at the very end of a prompt that
    an encoder with no end token and no padding encodes) pairs its mean with a zero row: the
    layer reads nothing there without the concept. Pairs whose rows are identical (a causal
    encoder's tokens before the concept) carry no difference and are dropped; pairs with NaN or inf
    are kept, for the decomposition to refuse.
    """
    n_w, n_o = len(with_ids), len(without_ids)
    prefix = 0
    while prefix < min(n_w, n_o) and with_ids[prefix] == without_ids[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(n_w, n_o) - prefix and with_ids[n_w - 1 - suffix] == without_ids[n_o - 1 - suffix]:
        suffix += 1
    w = [with_rows[:prefix], with_rows[n_w - suffix:]]
    o = [without_rows[:prefix], without_rows[n_o - suffix:]]
    if prefix < n_w - suffix and prefix < n_o - suffix:
        w.append(with_rows[prefix:n_w - suffix].mean(0, keepdim=True))
        o.append(without_rows[prefix:n_o - suffix].mean(0, keepdim=True))
    elif added_span and prefix < n_w - suffix:
        w.append(with_rows[prefix:n_w - suffix].mean(0, keepdim=True))
        o.append(torch.zeros_like(w[-1]))
    w, o = torch.cat(w), torch.cat(o)
    same = (w - o).norm(dim=1) <= 1e-6 * w.norm(dim=1).clamp_min(1e-30)      # False for NaN: kept
    return w[~same], o[~same]
