"""Concept prompts → token embeddings, with the graph's own CLIP object.

The concept inside each prompt is found by tokenizing the prompt twice, with the concept
wrapped in ComfyUI's weight syntax at weight 1.0 and at 1.1: the tokens whose weight differs
are the concept's, whatever the template or tokenizer. The prompt is encoded at weight 1.0,
which ComfyUI treats exactly like unweighted text. For the concept contribution (the default rows) the
template without the concept is encoded in the same passes and subtracted row by row.

An encoder output can be several runs of rows (SD3: the CLIP rows, then the T5 rows); the
family's ``segments`` say which tokenizer output each run comes from. The CLIP can also hand the
model rows beside its conditioning (HiDream's Llama layers, Hunyuan-DiT's mT5): a segment names the
output it lives in, and for a stack of hidden layers the layer.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from ..cure_core.concepts import CONTRIBUTION, PromptTokens, pair_rows, without_concept
from ..cure_core.families import TextSegment


@dataclass(frozen=True)
class EncodedConcepts:
    rows: torch.Tensor                  # [n, d] selected token embeddings (float32)
    tokens_per_concept: dict[str, int]  # how many rows each concept contributed
    segments: tuple[str, ...]           # the segments the rows came from (their labels)
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


def _llama3_user_message(flat: list[tuple]) -> tuple[int, int, int]:
    """The rows HunyuanVideo keeps of its Llama-3 template: from the first user token to the <|eot_id|>
    that closes the user message (the crop of comfy/text_encoders/hunyuan_video.py)."""
    ids = [t[0] for t in flat]
    for i in range(len(ids) - 2):
        if ids[i:i + 3] == [128006, 882, 128007]:                 # <|start_header_id|> user <|end_header_id|>
            start = i + 2
            if len(ids) > start + 2 and ids[start + 1] == 271:     # "\n\n"
                start += 2
            end = ids.index(128009, i)                             # <|eot_id|>
            return start, end + 1, end
    raise ValueError("The Llama tokens do not contain the user message of HunyuanVideo's template.")


def _qwen_image_template(flat: list[tuple]) -> tuple[int, int, int]:
    """The rows Qwen-Image keeps: from the user message to the end (comfy/text_encoders/qwen_image.py drops
    the system part up to the second <|im_start|> and its "user\\n")."""
    ids = [t[0] for t in flat]
    starts = [i for i, t in enumerate(ids) if t == 151644][:2]        # <|im_start|>
    if len(starts) < 2:
        raise ValueError("The Qwen tokens do not contain Qwen-Image's chat template.")
    start = starts[1]
    if len(ids) > start + 3 and ids[start + 1] == 872 and ids[start + 2] == 198:     # "user", "\n"
        start += 3
    end = ids.index(151645, start) if 151645 in ids[start:] else None                 # <|im_end|>
    return start, len(ids), end


WINDOWS = {"llama3 user message": _llama3_user_message, "qwen image template": _qwen_image_template}


def row_window(segment: TextSegment, flat: list[tuple]) -> tuple[int, int, int | None]:
    """``(start, stop, end token or None)``: which tokens of a segment the encoder output keeps as rows."""
    if segment.window is None:
        return 0, len(flat), None
    return WINDOWS[segment.window](flat)


def _positions(marked: list[tuple], probe: list[tuple], segment: TextSegment) -> PromptTokens:
    """Concept, text and end-token positions, as row indices of the segment's (possibly cropped) rows."""
    start, stop, window_end = row_window(segment, marked)
    concept = [i for i, (a, b) in enumerate(zip(marked, probe)) if a[1] != b[1]]
    content = [i for i, t in enumerate(marked) if len(t) > 2 and t[2] > 0]
    end = window_end
    if end is None and content and content[-1] + 1 < len(marked) and marked[content[-1] + 1][2] == 0:
        end = content[-1] + 1
    inside = lambda positions: [p - start for p in positions if start <= p < stop and p != end]
    return PromptTokens(inside(concept), inside(content), None if end is None else end - start)


def _aligned_positions(marked: list[tuple], base: list[tuple], segment: TextSegment) -> PromptTokens:
    """For tokenizers that ignore weight syntax: the concept is what the prompt has and the same prompt
    without the concept lacks (their common first and last tokens removed)."""
    ids, base_ids = [t[0] for t in marked], [t[0] for t in base]
    head = 0
    while head < min(len(ids), len(base_ids)) and ids[head] == base_ids[head]:
        head += 1
    tail = 0
    while tail < min(len(ids), len(base_ids)) - head and ids[-1 - tail] == base_ids[-1 - tail]:
        tail += 1
    positions = _positions(marked, marked, segment)
    start = row_window(segment, marked)[0]
    concept = [p - start for p in range(head, len(ids) - tail)]
    return PromptTokens([p for p in concept if p in positions.content], positions.content, positions.end)


def locate_concept(clip, concept: str, prefix: str, suffix: str,
                   segments: list[TextSegment]) -> tuple[dict, dict]:
    """Tokens of ``prefix + concept + suffix`` and, per segment key, where the concept is in its rows."""
    plain = any(s.plain_text for s in segments)
    text = f"{prefix}{concept}{suffix}" if plain else f"{prefix}({_escape(concept)}:1.0){suffix}"
    marked = clip.tokenize(text, return_word_ids=True)
    missing = [s.tokens for s in segments if s.tokens not in marked]
    if missing:
        raise ValueError(f"This CLIP gives no {', '.join(map(repr, missing))} tokens, which the model reads: "
                         f"connect the text encoder(s) made for this model (it gives {', '.join(marked)}).")
    if plain:
        base = clip.tokenize(f"{prefix}{suffix}", return_word_ids=True)
        return marked, {s.tokens: _aligned_positions(_flatten(marked, s.tokens), _flatten(base, s.tokens), s)
                        for s in segments}
    probe = clip.tokenize(f"{prefix}({_escape(concept)}:1.1){suffix}", return_word_ids=True)
    return marked, {s.tokens: _positions(_flatten(marked, s.tokens), _flatten(probe, s.tokens), s) for s in segments}


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


def _segment_rows(outputs: dict, segment: TextSegment) -> torch.Tensor:
    """``[rows, width]`` of the output a segment lives in (one hidden layer of a stacked output), float32."""
    tensor = outputs[segment.output]
    if tensor.ndim == 4:            # [batch, layers, rows, width]: HiDream's Llama layers
        if segment.hidden_layer is None:
            raise RuntimeError(f"The encoder output {segment.output!r} stacks hidden layers: the segment must "
                               "name the one a layer reads.")
        tensor = tensor[:, segment.hidden_layer]
    return tensor[0].float()


def encode_token_rows(clip, token_dicts: list[dict],
                      segments: list[TextSegment]) -> list[dict[TextSegment, torch.Tensor]]:
    """For every tokenized prompt and every segment, the encoder output rows of its tokens (float32).

    Prompts are encoded in as few forward passes as possible: each prompt becomes a section of
    one batch (ComfyUI encodes sections together and concatenates them, segment by segment).
    Segments may live in different outputs of the same pass (the conditioning and its extras).
    """
    # An encoder that crops its output (HunyuanVideo) crops the whole batch at once: one prompt per pass there.
    cropped = any(s.window is not None for s in segments)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, tokens in enumerate(token_dicts):
        groups[(index,) if cropped else _batch_signature(tokens)].append(index)
    out: list[dict[TextSegment, torch.Tensor]] = [{} for _ in token_dicts]
    for members in groups.values():
        first = token_dicts[members[0]]
        batch = {key: [chunk for i in members for chunk in token_dicts[i][key]] for key in first}
        outputs = clip.encode_from_tokens(batch, return_dict=True)
        lengths = {}                              # tokenizer key -> rows of each prompt
        for s in segments:
            windows = [row_window(s, _flatten(token_dicts[i], s.tokens)) for i in members]
            lengths[s.tokens] = [stop - start for start, stop, _ in windows]
        starts = {}                               # (output, tokenizer key) -> its first row in that output
        for name in dict.fromkeys(s.output for s in segments):
            offset = 0
            for key in dict.fromkeys(s.tokens for s in segments if s.output == name):   # in output order
                starts[name, key] = offset
                offset += sum(lengths[key])
            if offset != outputs[name].shape[-2]:
                raise RuntimeError(f"The text encoder returned {outputs[name].shape[-2]} rows in {name!r} where "
                                   f"its tokens make {offset}: this encoder layout is not supported.")
        for s in segments:                        # segment-major: all prompts' rows of one segment, then the next
            rows, offset = _segment_rows(outputs, s), starts[s.output, s.tokens]
            for i, length in zip(members, lengths[s.tokens]):
                out[i][s] = rows[offset:offset + length]
                offset += length
    return out


def encode_concept_groups(clip, prompt_sets: list[list[tuple[str, str, str]]], selection: str,
                          groups: list[tuple[TextSegment, ...]],
                          with_pooled: bool = False) -> list[list[EncodedConcepts | None] | None]:
    """Encode the ``(concept, prefix, suffix)`` prompts of every set (forget, retain) in one batch and, for every
    group of segments (the rows one kind of layer reads), keep the selected rows of its segments.

    Returns, per group, one entry per set (``None`` for an empty set), or ``None`` for a group none of whose
    encoders this CLIP has (the model reads zeros there: nothing to erase).
    """
    if not any(prompt_sets):
        raise ValueError("No concept prompts to encode.")
    active = active_segments(clip, tuple(dict.fromkeys(s for group in groups for s in group)))
    sources = list({s.tokens: s for s in active}.values())        # one per tokenizer output, to locate tokens in
    located = [[_Prompt(concept, *locate_concept(clip, concept, prefix, suffix, sources))
                for concept, prefix, suffix in prompts] for prompts in prompt_sets]
    flat = [prompt for prompts in located for prompt in prompts]
    for prompt in flat:
        if not any(p.concept for p in prompt.positions.values()):
            raise ValueError(f"The concept {prompt.concept!r} tokenizes to nothing with this text encoder: "
                             "use words the tokenizer knows.")
    token_dicts = [p.tokens for p in flat]
    base_of: list[int] = []                 # per prompt: where its template without the concept is in token_dicts
    if selection == CONTRIBUTION:           # each distinct template without the concept, once, in the same passes
        where: dict[str, int] = {}
        for _, prefix, suffix in (prompt for prompts in prompt_sets for prompt in prompts):
            text = without_concept(prefix, suffix)
            if text not in where:
                where[text] = len(token_dicts)
                token_dicts.append(clip.tokenize(text, return_word_ids=True))
            base_of.append(where[text])
    encoded = encode_token_rows(clip, token_dicts, active)
    pooled = [None] * len(located)
    if with_pooled:         # ComfyUI returns the pooled vector of the first section only: one pass per prompt
        pooled = [torch.cat([clip.encode_from_tokens(p.tokens, return_pooled=True)[1].float().reshape(1, -1)
                             for p in prompts]) if prompts else None for prompts in located]
    results: list[list[EncodedConcepts | None] | None] = []
    for group in groups:
        segments = [s for s in group if s in active]
        if not segments:
            results.append(None)
            continue
        per_set: list[EncodedConcepts | None] = []
        index = 0
        for prompts, set_pooled in zip(located, pooled):
            if not prompts:
                per_set.append(None)
                continue
            rows, counts = [], {}
            for prompt in prompts:
                per_segment = encoded[index]
                for s in segments:
                    if selection == CONTRIBUTION:
                        base = base_of[index]
                        picked = _contribution(prompt.tokens, per_segment[s], token_dicts[base], encoded[base][s], s)
                    else:
                        picked = per_segment[s][prompt.positions[s.tokens].select(selection)]
                    rows.append(picked)
                    counts[prompt.concept] = counts.get(prompt.concept, 0) + len(picked)
                index += 1
            per_set.append(EncodedConcepts(torch.cat(rows), counts, tuple(s.label for s in segments), set_pooled))
        results.append(per_set)
    return results


def _window_ids(tokens: dict, segment: TextSegment) -> list[int]:
    """Token ids of everything a layer reads of one segment (start, text, end and padding tokens): one per row."""
    flat = _flatten(tokens, segment.tokens)
    start, stop, _ = row_window(segment, flat)
    return [t[0] for t in flat[start:stop]]


def _contribution(tokens: dict, rows: torch.Tensor, base_tokens: dict, base_rows: torch.Tensor,
                  segment: TextSegment) -> torch.Tensor:
    """What the concept adds to every row the layer reads: the prompt's rows minus the rows of the template
    without the concept, paired by :func:`pair_rows` (rows the concept does not change are dropped; a concept
    the template ends with, on an encoder with no end token and no padding, counts against nothing). Padding
    rows count: a causal encoder writes the whole prompt into them, and the layers read them."""
    with_concept, without = pair_rows(_window_ids(tokens, segment), rows, _window_ids(base_tokens, segment),
                                      base_rows, added_span=True)
    return with_concept - without


def encode_concept_sets(clip, prompt_sets: list[list[tuple[str, str, str]]], selection: str,
                        segments: tuple[TextSegment, ...], with_pooled: bool = False) -> list[EncodedConcepts | None]:
    """:func:`encode_concept_groups` for layers that all read the same rows, ``segments``."""
    return encode_concept_groups(clip, prompt_sets, selection, [segments], with_pooled)[0]


@dataclass(frozen=True)
class EncodedPrompt:
    """Token ids and encoder rows of a prompt's text and end token, per segment (of the CLIP's active ones)."""
    ids: dict[TextSegment, list[int]]
    rows: dict[TextSegment, torch.Tensor]


def encode_prompts(clip, prompts: list[str], segments: tuple[TextSegment, ...]) -> list[EncodedPrompt]:
    """Plain prompts (no concept marking): the rows of their text tokens and end token, per segment."""
    active = active_segments(clip, segments)
    token_dicts = []
    for prompt in prompts:
        tokens = clip.tokenize(prompt, return_word_ids=True)
        missing = [s.tokens for s in active if s.tokens not in tokens]
        if missing:
            raise ValueError(f"This CLIP gives no {', '.join(map(repr, missing))} tokens, which the model reads: "
                             f"connect the text encoder(s) made for this model (it gives {', '.join(tokens)}).")
        token_dicts.append(tokens)
    encoded = encode_token_rows(clip, token_dicts, active)
    result = []
    for prompt, tokens, per_key in zip(prompts, token_dicts, encoded):
        ids, rows = {}, {}
        for s in active:
            flat = _flatten(tokens, s.tokens)
            start = row_window(s, flat)[0]
            positions = _positions(flat, flat, s).select("all prompt tokens")
            if not positions:
                raise ValueError(f"The prompt {prompt!r} tokenizes to nothing with this text encoder.")
            ids[s] = [flat[start + i][0] for i in positions]
            rows[s] = per_key[s][positions]
        result.append(EncodedPrompt(ids, rows))
    return result
