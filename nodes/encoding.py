"""Concept prompts → token embeddings, with the graph's own CLIP object.

The concept inside each prompt is found by tokenizing the prompt twice, with the
concept wrapped in ComfyUI's weight syntax at weight 1.0 and at 1.1: the tokens whose
weight differs are the concept's, whatever the template or tokenizer. The prompt is
encoded at weight 1.0, which ComfyUI treats exactly like unweighted text.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cure_core.concepts import PromptTokens


@dataclass(frozen=True)
class EncodedConcepts:
    rows: torch.Tensor                  # [n, d] selected token embeddings (float32)
    tokens_per_concept: dict[str, int]  # how many rows each concept contributed
    pooled: torch.Tensor | None         # [prompts, d_pooled] pooled vectors, when asked for


def _escape(concept: str) -> str:
    return concept.replace("(", "\\(").replace(")", "\\)")


def _flatten(tokens: dict) -> list[tuple]:
    """The token list of the first encoder key, all chunks in order (rows of the encoder output)."""
    key = sorted(tokens)[0]
    return [t for chunk in tokens[key] for t in chunk]


def locate_concept(clip, concept: str, prefix: str, suffix: str) -> tuple[dict, PromptTokens]:
    """Tokens of ``prefix + concept + suffix`` and the positions of the concept in them."""
    marked = clip.tokenize(f"{prefix}({_escape(concept)}:1.0){suffix}", return_word_ids=True)
    probe = clip.tokenize(f"{prefix}({_escape(concept)}:1.1){suffix}", return_word_ids=True)
    flat, flat_probe = _flatten(marked), _flatten(probe)
    concept_positions = [i for i, (a, b) in enumerate(zip(flat, flat_probe)) if a[1] != b[1]]
    content = [i for i, t in enumerate(flat) if len(t) > 2 and t[2] > 0]
    end = None
    if content and content[-1] + 1 < len(flat) and flat[content[-1] + 1][2] == 0:
        end = content[-1] + 1
    return marked, PromptTokens(concept_positions, content, end)


def encode_concepts(clip, prompts: list[tuple[str, str, str]], selection: str,
                    with_pooled: bool = False) -> EncodedConcepts:
    """Encode every ``(concept, prefix, suffix)`` prompt in one batch and keep the selected rows."""
    if not prompts:
        raise ValueError("No concept prompts to encode.")
    located = [(concept, *locate_concept(clip, concept, prefix, suffix)) for concept, prefix, suffix in prompts]
    for concept, _, positions in located:
        if not positions.concept:
            raise ValueError(f"The concept {concept!r} tokenizes to nothing with this text encoder: "
                             "use words the tokenizer knows.")
    # One forward pass: every prompt's chunks become sections of a single long "prompt".
    batch = {key: [chunk for _, tokens, _ in located for chunk in tokens[key]] for key in located[0][1]}
    cond = clip.encode_from_tokens(batch)[0].float()
    lengths = [len(_flatten(tokens)) for _, tokens, _ in located]
    if sum(lengths) != cond.shape[0]:
        raise RuntimeError(f"The text encoder returned {cond.shape[0]} rows for {sum(lengths)} tokens: "
                           "its output is not one row per token, which the concept locator needs.")
    rows, counts, offset = [], {}, 0
    for (concept, _, positions), length in zip(located, lengths):
        picked = positions.select(selection)
        rows.append(cond[[offset + i for i in picked]])
        counts[concept] = counts.get(concept, 0) + len(picked)
        offset += length
    pooled = None
    if with_pooled:
        pooled = torch.cat([clip.encode_from_tokens(tokens, return_pooled=True)[1].float().reshape(1, -1)
                            for _, tokens, _ in located])
    return EncodedConcepts(torch.cat(rows), counts, pooled)
