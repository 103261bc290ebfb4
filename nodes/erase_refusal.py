"""The **Erase Concepts (Refusal Vector)** node: the low-rank refusal vector on a ComfyUI MODEL."""
from __future__ import annotations

import torch
import comfy.utils
from comfy_api.latest import io, ui

from ..cure_core.edit import edit_layer, format_layer_table
from ..cure_core.families import LAYER_CHOICES
from ..cure_core.refusal import DEFAULT_NEUTRAL_PROMPTS, MODES, pair_rows, parse_pairs, refusal_eraser
from ..cure_core.concepts import parse_concepts
from .encoding import encode_prompts
from .erase_cure import CATEGORY, check_strength, detect_family
from .patching import effective_weight, patched_clone

# Where the activations come from. Text embeddings work for every family the pack supports.
SOURCES = ("text embeddings",)


def erase_with_refusal(model, clip, pairs_text: str, neutral_text: str = "\n".join(DEFAULT_NEUTRAL_PROMPTS),
                       rank: int = 100, contrast: float = 1.0, strength: float = 1.0, mode: str = MODES[0],
                       source: str = SOURCES[0], layers: str = LAYER_CHOICES[0]):
    """Everything the node does, as a function: returns ``(patched clone, report)``; the input MODEL is untouched."""
    pairs = parse_pairs(pairs_text)
    neutral = parse_concepts(neutral_text)
    strength = check_strength(strength)
    if source not in SOURCES:
        raise ValueError(f"Unknown activation source {source!r}; choose one of {', '.join(SOURCES)}.")
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; choose one of {', '.join(MODES)}.")
    family = detect_family(model)
    keys = family.text_layer_keys(model.model.state_dict().keys(), layers)
    if not keys:
        raise ValueError(f"No text-reading layers found in this {family.name} model: is it a complete checkpoint?")

    prompts = [p for pair in pairs for p in pair] + neutral
    encoded = encode_prompts(clip, prompts, family.segments)
    unsafe_rows, safe_rows = [], []
    for i in range(len(pairs)):
        unsafe, safe = encoded[2 * i], encoded[2 * i + 1]
        for key in unsafe.ids:
            u, s = pair_rows(unsafe.ids[key], unsafe.rows[key], safe.ids[key], safe.rows[key])
            unsafe_rows.append(u)
            safe_rows.append(s)
    unsafe_rows, safe_rows = torch.cat(unsafe_rows), torch.cat(safe_rows)
    neutral_rows = (torch.cat([r for e in encoded[2 * len(pairs):] for r in e.rows.values()]) if neutral else None)
    reference = comfy.utils.get_attr(model.model, keys[0])
    if unsafe_rows.shape[1] != reference.shape[1]:
        raise ValueError(f"The CLIP gives {unsafe_rows.shape[1]}-wide embeddings but this {family.name} model reads "
                         f"{reference.shape[1]}-wide ones: connect the CLIP that belongs to this model.")
    device = reference.device
    eraser = refusal_eraser(unsafe_rows.to(device), safe_rows.to(device),
                            None if neutral_rows is None else neutral_rows.to(device), rank, contrast, strength, mode)
    # The edit's strength is inside the eraser (P = λ q qᵀ), so the patch goes on at strength 1.
    differences = (unsafe_rows - safe_rows).to(device)          # what the concept adds: the edit's target
    neutral_on_device = None if neutral_rows is None else neutral_rows.to(device)
    progress = comfy.utils.ProgressBar(len(keys))
    edits = []
    for key in keys:
        edits.append(edit_layer(key, effective_weight(model, key), eraser, differences, neutral_on_device))
        progress.update(1)
    patched = patched_clone(model, edits, 1.0)
    removed = [e.forget_removed for e in edits]
    lines = [
        f"Low-rank refusal vector on {family.name} (ComfyUI model type {type(model.model.model_config).__name__})",
        f"Source: {source} ({family.encoder}); {len(pairs)} pairs -> {len(unsafe_rows)} paired rows; "
        f"{len(neutral)} neutral prompts -> {0 if neutral_rows is None else len(neutral_rows)} rows",
        f"Mode: {mode}; rank asked {rank}, kept {eraser.rank}; contrast {contrast:g}; strength {strength:g}",
        f"Edited {len(edits)} layer{'' if len(edits) == 1 else 's'} ({layers}); share of the concept's effect "
        f"(unsafe − safe rows) removed: mean {sum(removed) / len(removed):.2%}; patches hold "
        f"{sum(e.numel for e in edits) * 4 / 2**20:.2f} MiB",
        "Per layer (forget = the unsafe − safe differences, retained = the neutral prompts' rows):",
        format_layer_table(edits),
    ]
    return patched, "\n".join(lines)


class EraseConceptsRefusal(io.ComfyNode):
    """Node wrapper of :func:`erase_with_refusal`."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CURE_EraseConceptsRefusal",
            display_name="Erase Concepts (Refusal Vector)",
            category=CATEGORY,
            description="Removes a concept with the low-rank refusal vector (Facchiano et al. 2025): the direction "
                        "in which prompts with the concept differ from the same prompts without it, made robust "
                        "by a contrastive PCA against neutral prompts, is projected out of the layers that read "
                        "the text. Returns a patched copy; the input model is unchanged.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion or video model to edit (any family the pack supports)."),
                io.Clip.Input("clip", tooltip="The text encoder that belongs to this model."),
                io.String.Input("pairs", multiline=True, default="",
                                placeholder="one pair per line: with the concept | without it, e.g.\n"
                                            "a nude woman walking on a beach | a woman walking on a beach",
                                tooltip="About five pairs of prompts that differ only by the concept, one pair per "
                                        "line, the two prompts separated by '|'."),
                io.String.Input("neutral_prompts", multiline=True, default="\n".join(DEFAULT_NEUTRAL_PROMPTS),
                                tooltip="Everyday prompts without the concept, one per line: directions in which "
                                        "they vary are protected (contrastive PCA). Empty: plain mean difference."),
                io.Int.Input("rank", default=100, min=1, max=4096,
                             tooltip="k, how many contrastive directions span the refusal subspace (paper: 100; "
                                     "only directions with a positive contrast are kept)."),
                io.Float.Input("contrast", default=1.0, min=0.0, max=100.0, step=0.05,
                               tooltip="α in C = C_r − α C_e: how strongly neutral variation is discounted."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="λ in W' = W (I − λ q qᵀ): 1 removes the refusal direction entirely."),
                io.Combo.Input("mode", options=MODES, default=MODES[0],
                               tooltip="Project out the single refusal direction q (in the subspace), or the "
                                       "whole rank-k subspace."),
                io.Combo.Input("source", options=SOURCES, default=SOURCES[0],
                               tooltip="Where the activations come from: the text encoder's token embeddings "
                                       "(fast, any family)."),
                io.Combo.Input("layers", options=LAYER_CHOICES, default=LAYER_CHOICES[0],
                               tooltip="Which layers to edit: every layer that reads the text tokens, or on the "
                                       "UNets the cross-attention keys or values only."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="A patched copy of the model that refuses the concept."),
                io.String.Output(display_name="report", tooltip="What was built and how much it removes, per layer."),
            ],
        )

    @classmethod
    def execute(cls, model, clip, pairs: str, neutral_prompts: str, rank: int, contrast: float, strength: float,
                mode: str, source: str, layers: str) -> io.NodeOutput:
        patched, report = erase_with_refusal(model, clip, pairs, neutral_prompts, rank, contrast, strength, mode,
                                             source, layers)
        return io.NodeOutput(patched, report, ui=ui.PreviewText(report))
