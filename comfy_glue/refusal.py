"""The low-rank refusal vector on a ComfyUI MODEL: what the **Erase Concepts (Refusal Vector)** node does.

Rows come from the graph's CLIP (text source) or from the denoiser's own layers while it samples the prompts
(denoiser source); the subspace and the projection are :mod:`cure_core.refusal`."""
from __future__ import annotations

import torch
import comfy.utils

from ..cure_core.concepts import pair_rows, parse_concepts
from ..cure_core.checks import check_choice, check_strength
from ..cure_core.edit import LayerMeasure, format_layer_table
from ..cure_core.families import LAYER_CHOICES
from ..cure_core.refusal import (DEFAULT_NEUTRAL_PROMPTS, MODES, mean_shift_bias, parse_pair_groups,
                                  refusal_eraser_per_concept, separation)
from .denoiser_activations import EVERY_TOKEN, TOKEN_MEAN, capture_layer_inputs
from .encoding import encode_prompts
from .family import detect_family
from .patching import patched_clone, rows_as_read
from .weights import effective_weight, weight_device, weight_shape

# Where the activations come from: the text encoder (fast, edits the text-reading layers) or the
# denoiser itself (the paper's method, edits attention output projections in the last blocks).
TEXT_SOURCE, DENOISER_SOURCE = "text embeddings", "denoiser activations"
SOURCES = (TEXT_SOURCE, DENOISER_SOURCE)

# How the denoiser source reads and projects (docs/method.md, "The denoiser source"): the paper's recipe
# (token-averaged inputs of the last blocks' attention output projections, one direction) barely erases on the
# miniature model; every image token's input to every block's projection, with a rank-MEASURED_RANK subspace
# (shared out among a list's concepts), erases most concepts there with the preserved prompts within about 2 points
# of the original (the figures, and where it falls short of the text source, are in docs/method.md). It also sets
# the removed part of each layer's input to the safe prompts' mean instead of zero (a bias change on the layer), which
# erased more on every concept set measured at the same preserved accuracy; the paper's recipe keeps zero.
MEASURED_RECIPE, PAPER_RECIPE = "every image token, every block (measured)", "token mean, last blocks (paper)"
DENOISER_RECIPES = (MEASURED_RECIPE, PAPER_RECIPE)
MEASURED_RANK = 16
REMOVED_TO_SAFE_MEAN, REMOVED_TO_ZERO = "the safe prompts' mean", "zero"


def _per_concept(per_pair: list[tuple[torch.Tensor, torch.Tensor]], concepts: list[int]):
    """``[(unsafe rows, safe rows)]`` per concept from the pairs' own, ``concepts`` pairs after pairs."""
    grouped, start = [], 0
    for count in concepts:
        block = per_pair[start:start + count]
        grouped.append((torch.cat([u for u, _ in block]), torch.cat([s for _, s in block])))
        start += count
    return grouped


def _text_rows(model, clip, family, keys, pairs, neutral, concepts):
    """Per text-reading layer key: ([(unsafe rows, safe rows) per concept], neutral rows or None), as the layer
    reads them (``concepts``: how many pairs each concept has, in order). Layers that read the same encoder rows share one
    tuple (hence one eraser); layers that read only an encoder this CLIP lacks (it gives the model zeros there)
    get none."""
    unet_config = model.model.model_config.unet_config
    reads = {key: family.reads(key, unet_config) for key in keys}
    prompts = [p for pair in pairs for p in pair] + neutral
    encoded = encode_prompts(clip, prompts, tuple(dict.fromkeys(s for group in reads.values() for s in group)))
    shared = {}
    for group in dict.fromkeys(reads.values()):
        segments = [s for s in group if s in encoded[0].rows]
        if not segments:
            continue
        per_pair = []
        for i in range(len(pairs)):
            unsafe, safe = encoded[2 * i], encoded[2 * i + 1]
            blocks = [pair_rows(unsafe.ids[s], unsafe.rows[s], safe.ids[s], safe.rows[s]) for s in segments]
            per_pair.append(tuple(torch.cat(side) for side in zip(*blocks)))
        neutral_rows = torch.cat([e.rows[s] for e in encoded[2 * len(pairs):] for s in segments]) if neutral else None
        grouped = [tuple(rows_as_read(model, family, r) for r in pair) for pair in _per_concept(per_pair, concepts)]
        shared[group] = (grouped, rows_as_read(model, family, neutral_rows))
    return {key: shared[group] for key, group in reads.items() if group in shared}


def _denoiser_rows(model, clip, keys, pairs, neutral, steps, size, concepts, pooling):
    """Per denoiser layer key: ([(unsafe rows, safe rows) per concept], neutral rows or None), the rows of every
    prompt and step pooled by ``pooling``."""
    prompts = [p for pair in pairs for p in pair] + neutral
    conditionings = [clip.encode_from_tokens_scheduled(clip.tokenize(p)) for p in prompts]
    captured = capture_layer_inputs(model, conditionings, keys, steps, size, pooling=pooling)
    rows = {}
    for key in keys:
        grouped = _per_concept([(captured[2 * i][key], captured[2 * i + 1][key]) for i in range(len(pairs))],
                               concepts)
        neutral_rows = torch.cat([c[key] for c in captured[2 * len(pairs):]]) if neutral else None
        rows[key] = (grouped, neutral_rows)
    return rows


def erase_with_refusal(model, clip, pairs_text: str, neutral_text: str = "\n".join(DEFAULT_NEUTRAL_PROMPTS),
                       rank: int = 100, contrast: float = 1.0, strength: float = 1.0, mode: str = MODES[0],
                       source: str = TEXT_SOURCE, layers: str = LAYER_CHOICES[0], denoiser_blocks: int = 2,
                       denoiser_steps: int = 4, denoiser_size: int = 16, denoiser_recipe: str = MEASURED_RECIPE):
    """Everything the node does, as a function: returns ``(patched clone, report)``; the input MODEL is untouched.

    The denoiser source's ``denoiser_recipe``: the measured one reads every image token of every block the
    family's denoiser layers have and projects out each concept's rank-k subspace,
    ``k = max(1, min(rank, MEASURED_RANK) // concepts)`` (``mode`` and ``denoiser_blocks`` are the paper
    recipe's) and sets the removed part to the safe prompts' mean (:func:`cure_core.refusal.mean_shift_bias`) on
    every layer that has a bias; the paper's reads the token mean of the last ``denoiser_blocks`` blocks, projects
    with ``mode`` and sets the removed part to zero."""
    pair_groups = parse_pair_groups(pairs_text)
    pairs = [pair for group in pair_groups for pair in group]
    concepts = [len(group) for group in pair_groups]          # pairs per concept, in order
    neutral = parse_concepts(neutral_text)
    strength = check_strength(strength)
    check_choice(source, SOURCES, "activation source")
    check_choice(mode, MODES, "mode")
    check_choice(denoiser_recipe, DENOISER_RECIPES, "denoiser recipe")
    measured = source == DENOISER_SOURCE and denoiser_recipe == MEASURED_RECIPE
    if measured:
        # The rank is a budget for the whole list: five concepts with sixteen directions each took most of a
        # 64-wide layer, and the preserved prompts' concepts fell to a third of their pictures (docs/benchmark.md).
        mode, rank = MODES[1], max(1, min(rank, MEASURED_RANK) // len(concepts))
    family = detect_family(model)
    state_keys = model.model.state_dict().keys()
    if source == TEXT_SOURCE:
        keys = family.text_layer_keys(state_keys, layers)
    else:
        if denoiser_blocks < 1:
            raise ValueError(f"denoiser_blocks must be at least 1 (got {denoiser_blocks}).")
        keys = family.denoiser_layer_keys(state_keys, len(state_keys) if measured else denoiser_blocks)
    if not keys:
        raise ValueError(f"No layers to edit found in this {family.name} model: is it a complete checkpoint?")

    if source == TEXT_SOURCE:
        rows = _text_rows(model, clip, family, keys, pairs, neutral, concepts)
        keys = [key for key in keys if key in rows]
        for key in keys:
            width = weight_shape(model, key)[1]
            if rows[key][0][0][0].shape[1] != width:
                raise ValueError(f"The CLIP gives {rows[key][0][0][0].shape[1]}-wide embeddings but this {family.name} "
                                 f"model's {key.removesuffix('.weight')} reads {width}-wide ones: connect the CLIP "
                                 "that belongs to this model.")
    else:
        rows = _denoiser_rows(model, clip, keys, pairs, neutral, denoiser_steps, denoiser_size, concepts,
                              EVERY_TOKEN if measured else TOKEN_MEAN)

    # The edit's strength is inside the eraser (P = λ q qᵀ), so the patch goes on at strength 1.
    device = weight_device(model, keys[0])
    built: dict[int, tuple] = {}     # the text source shares one set of rows, hence one eraser, across layers

    def eraser_for(key):
        if id(rows[key]) not in built:
            grouped, neutral_rows = rows[key]
            grouped = [(unsafe.to(device), safe.to(device)) for unsafe, safe in grouped]
            neutral_rows = None if neutral_rows is None else neutral_rows.to(device)
            eraser = refusal_eraser_per_concept(grouped, neutral_rows, rank, contrast, strength, mode)
            # forget = what the concepts add (unsafe − safe): the share of it removed is what the report says
            differences = torch.cat([u - v for u, v in grouped])
            safe_mean = torch.cat([safe for _, safe in grouped]).mean(0)
            built[id(rows[key])] = (eraser, differences, neutral_rows, safe_mean,
                                    LayerMeasure(eraser, differences, neutral_rows))
        return built[id(rows[key])]

    where_blocks = "every block" if measured else f"last {denoiser_blocks} blocks"
    progress = comfy.utils.ProgressBar(len(keys))
    edits, kept, n_rows, separations = [], [], [], []
    bias_changes: dict[str, torch.Tensor] = {}
    for key in keys:
        eraser, differences, neutral_rows, safe_mean, measure = eraser_for(key)
        if source == DENOISER_SOURCE:           # where the concept is carried, for the report
            separations.append(separation(differences, neutral_rows))
        weight = effective_weight(model, key)
        edits.append(measure.edit(key, weight))
        bias_key = key.removesuffix("weight") + "bias"
        if measured and bias_key in state_keys:
            bias_changes[bias_key] = mean_shift_bias(weight, eraser, safe_mean).float()
        kept.append(eraser.rank)
        n_rows.append((len(differences), 0 if neutral_rows is None else len(neutral_rows)))
        progress.update(1)
    recipe = {"method": "low-rank refusal vector", "family": family.name, "pairs": pairs_text.strip(),
              "neutral_prompts": "\n".join(neutral), "rank": str(rank), "contrast": f"{contrast:g}",
              "strength": f"{strength:g}", "mode": mode, "source": source,
              "layers": layers if source == TEXT_SOURCE else where_blocks}
    if source == DENOISER_SOURCE:
        recipe["denoiser_recipe"] = denoiser_recipe
        recipe["removed_part"] = REMOVED_TO_SAFE_MEAN if measured else REMOVED_TO_ZERO
    patched = patched_clone(model, edits, 1.0, recipe, bias_changes=bias_changes)
    removed = [e.forget_removed for e in edits]
    where = (f"text embeddings ({family.encoder})" if source == TEXT_SOURCE else
             f"denoiser activations ({denoiser_steps} steps at {denoiser_size}x{denoiser_size} latent, "
             f"{'every image token of the layer inputs' if measured else 'layer inputs averaged over the tokens'}, "
             f"{where_blocks})")
    lines = [
        f"Low-rank refusal vector on {family.name} (ComfyUI model type {type(model.model.model_config).__name__})",
        f"Source: {where}; {len(pairs)} pairs -> {n_rows[0][0]} paired rows; {len(neutral)} neutral prompts -> "
        f"{n_rows[0][1]} rows (per layer)",
        f"Concepts: {len(concepts)} (pairs separated by blank lines); one refusal direction"
        f"{' or subspace' if mode != MODES[0] else ''} each, projected out together",
        *([f"Removed part set to the safe prompts' mean (a bias change) on {len(bias_changes)} of the {len(keys)} "
           f"layers{'' if len(bias_changes) == len(keys) else ' (the others have no bias: set to zero there)'}"]
          if measured else []),
        f"Mode: {mode}; rank asked {rank}{' per concept' if len(concepts) > 1 else ''}, kept {min(kept)}-{max(kept)}; "
        f"contrast {contrast:g}; strength {strength:g}",
        f"Edited {len(edits)} layer{'' if len(edits) == 1 else 's'}; share of the concept's effect "
        f"(unsafe − safe rows) removed: mean {sum(removed) / len(removed):.2%}; patches hold "
        f"{(sum(e.numel for e in edits) + sum(b.numel() for b in bias_changes.values())) * 4 / 2**20:.2f} MiB",
        "Per layer (forget = the unsafe − safe differences, retained = the neutral prompts' rows):",
        format_layer_table(edits),
    ]
    if source == DENOISER_SOURCE:
        # How far each layer's pairs stand out of the neutral prompts' variation: where the concept is carried.
        lines.append("Separation per layer (|mean difference| / neutral spread): " + ", ".join(
            f"{key.removeprefix('diffusion_model.').removesuffix('.weight')} {value:.2f}"
            for key, value in zip(keys, separations)))
    return patched, "\n".join(lines)
