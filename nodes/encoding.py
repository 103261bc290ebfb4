"""Concept prompts → token embeddings, with the graph's own CLIP object.

The concept inside each prompt is found by tokenizing the prompt twice, with the concept
wrapped in ComfyUI's weight syntax at weight 1.0 and at 1.1: the tokens whose weight differs
are the concept's, whatever the template or tokenizer. The prompt is encoded at weight 1.0,
which ComfyUI treats exactly like unweighted text.

An encoder output can be several runs of rows (SD3: the CLIP rows, then the T5 rows); the
family's ``segments`` say which tokenizer output each run comes from.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from ..cure_core.concepts import PromptTokens
from ..cure_core.families import TextSegment


@dataclass(frozen=True)
class EncodedConcepts:
    rows: torch.Tensor                  # [n, d] selected token embeddings (float32)
    tokens_per_concept: dict[str, int]  # how many rows each concept contributed
    segments: tuple[str, ...]           # tokenizer outputs the rows came from
    pooled: torch.Tensor | None         # [prompts, d_pooled] pooled vectors, when asked for


@dataclass(frozen=True)
class _Prompt:
    concept: str
    tokens: dict                        # ComfyUI token dict (key -> chunks of (token, weight, word id))
    positions: dict[str, PromptTokens]  # per segment key


def _escape(concept: str) -> str:
    return concept.replace("(", "\\(").replace(")", "\\)")


def _flatten(tokens: dict, key: str) -> list[tuple]:
    """Tokens of one tokenizer output, all chunks in order (the rows it becomes)."""
    return [t for chunk in tokens[key] for t in chunk]


def _positions(marked: list[tuple], probe: list[tuple]) -> PromptTokens:
    concept = [i for i, (a, b) in enumerate(zip(marked, probe)) if a[1] != b[1]]
    content = [i for i, t in enumerate(marked) if len(t) > 2 and t[2] > 0]
    end = None
    if content and content[-1] + 1 < len(marked) and marked[content[-1] + 1][2] == 0:
        end = content[-1] + 1
    return PromptTokens(concept, content, end)


def locate_concept(clip, concept: str, prefix: str, suffix: str, keys: list[str]) -> tuple[dict, dict]:
    """Tokens of ``prefix + concept + suffix`` and, per tokenizer key, where the concept is in them."""
    marked = clip.tokenize(f"{prefix}({_escape(concept)}:1.0){suffix}", return_word_ids=True)
    missing = [key for key in keys if key not in marked]
    if missing:
        raise ValueError(f"This CLIP gives no {', '.join(map(repr, missing))} tokens, which the model reads: "
                         f"connect the text encoder(s) made for this model (it gives {', '.join(marked)}).")
    probe = clip.tokenize(f"{prefix}({_escape(concept)}:1.1){suffix}", return_word_ids=True)
    return marked, {key: _positions(_flatten(marked, key), _flatten(probe, key)) for key in keys}


def active_segments(clip, segments: tuple[TextSegment, ...]) -> list[TextSegment]:
    """The segments this CLIP object actually produces (SD3 may come without CLIP-L/G or T5)."""
    model = clip.cond_stage_model
    active = [s for s in segments if not s.encoders or any(getattr(model, e, None) is not None for e in s.encoders)]
    if not active:
        raise ValueError("This CLIP object has none of the text encoders the model reads.")
    return active


def _batch_signature(tokens: dict) -> tuple:
    """Prompts with equal section lengths per tokenizer output can share one forward pass."""
    return tuple(sorted({(key, len(chunk)) for key, chunks in tokens.items() for chunk in chunks}))


def encode_token_rows(clip, token_dicts: list[dict], keys: list[str]) -> list[dict[str, torch.Tensor]]:
    """For every tokenized prompt and every segment key, the encoder output rows of all its tokens (float32).

    Prompts are encoded in as few forward passes as possible: each prompt becomes a section of
    one batch (ComfyUI encodes sections together and concatenates them, segment by segment).
    """
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, tokens in enumerate(token_dicts):
        groups[_batch_signature(tokens)].append(index)
    out: list[dict[str, torch.Tensor]] = [{} for _ in token_dicts]
    for members in groups.values():
        first = token_dicts[members[0]]
        batch = {key: [chunk for i in members for chunk in token_dicts[i][key]] for key in first}
        cond = clip.encode_from_tokens(batch)[0].float()
        lengths = {key: [len(_flatten(token_dicts[i], key)) for i in members] for key in keys}
        expected = sum(sum(v) for v in lengths.values())
        if expected != cond.shape[0]:
            raise RuntimeError(f"The text encoder returned {cond.shape[0]} rows where its tokens ({', '.join(keys)}) "
                               f"make {expected}: this encoder layout is not supported by the concept locator.")
        offset = 0
        for key in keys:                          # segment-major: all prompts' rows of one segment, then the next
            for i, length in zip(members, lengths[key]):
                out[i][key] = cond[offset:offset + length]
                offset += length
    return out


def encode_concepts(clip, prompts: list[tuple[str, str, str]], selection: str, segments: tuple[TextSegment, ...],
                    with_pooled: bool = False) -> EncodedConcepts:
    """Encode every ``(concept, prefix, suffix)`` prompt and keep the selected rows of every segment."""
    if not prompts:
        raise ValueError("No concept prompts to encode.")
    keys = [s.tokens for s in active_segments(clip, segments)]
    located = [_Prompt(concept, *locate_concept(clip, concept, prefix, suffix, keys))
               for concept, prefix, suffix in prompts]
    for prompt in located:
        if not any(p.concept for p in prompt.positions.values()):
            raise ValueError(f"The concept {prompt.concept!r} tokenizes to nothing with this text encoder: "
                             "use words the tokenizer knows.")
    encoded = encode_token_rows(clip, [p.tokens for p in located], keys)
    rows, counts = [], {}
    for prompt, per_key in zip(located, encoded):
        for key in keys:
            picked = prompt.positions[key].select(selection)
            rows.append(per_key[key][picked])
            counts[prompt.concept] = counts.get(prompt.concept, 0) + len(picked)
    pooled = None
    if with_pooled:
        pooled = torch.cat([clip.encode_from_tokens(p.tokens, return_pooled=True)[1].float().reshape(1, -1)
                            for p in located])
    return EncodedConcepts(torch.cat(rows), counts, tuple(keys), pooled)


@dataclass(frozen=True)
class EncodedPrompt:
    """Token ids and encoder rows of a prompt's text and end token, per segment key."""
    ids: dict[str, list[int]]
    rows: dict[str, torch.Tensor]


def encode_prompts(clip, prompts: list[str], segments: tuple[TextSegment, ...]) -> list[EncodedPrompt]:
    """Plain prompts (no concept marking): the rows of their text tokens and end token, per segment."""
    keys = [s.tokens for s in active_segments(clip, segments)]
    token_dicts = []
    for prompt in prompts:
        tokens = clip.tokenize(prompt, return_word_ids=True)
        missing = [key for key in keys if key not in tokens]
        if missing:
            raise ValueError(f"This CLIP gives no {', '.join(map(repr, missing))} tokens, which the model reads: "
                             f"connect the text encoder(s) made for this model (it gives {', '.join(tokens)}).")
        token_dicts.append(tokens)
    encoded = encode_token_rows(clip, token_dicts, keys)
    result = []
    for prompt, tokens, per_key in zip(prompts, token_dicts, encoded):
        ids, rows = {}, {}
        for key in keys:
            flat = _flatten(tokens, key)
            positions = _positions(flat, flat).select("all prompt tokens")
            if not positions:
                raise ValueError(f"The prompt {prompt!r} tokenizes to nothing with this text encoder.")
            ids[key] = [flat[i][0] for i in positions]
            rows[key] = per_key[key][positions]
        result.append(EncodedPrompt(ids, rows))
    return result
