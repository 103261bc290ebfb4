"""CURE's Spectral Eraser on a ComfyUI MODEL: what the **Erase Concepts (CURE)** node does, as functions.

:func:`erase_concepts` encodes the concepts with the graph's CLIP and erases them; :func:`erase_rows` erases
already-encoded rows (shared with Combine Erasure Files, which rebuilds one erasure from saved rows)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import comfy.utils

from ..cure_core.concepts import DEFAULT_ALPHA, TOKEN_SELECTIONS, expand, parse_concepts, parse_templates
from ..cure_core.checks import check_choice, check_disjoint, check_strength
from ..cure_core.edit import LayerEdit, LayerMeasure, edit_layer, format_layer_table
from ..cure_core.erasure_file import (CURE_METHOD, ROWS_AS_READ, ConceptRows, number_text, recipe_setting,
                                      row_set_name)
from ..cure_core.families import LAYER_CHOICES, Family, TextSegment
from ..cure_core.robust import ROBUST_ALPHA, context_templates
from ..cure_core.spectral import (COMBINATIONS, PER_CONCEPT, LowRankEraser, check_alpha,
                                  concept_set_eraser)
from .encoding import EncodedConcepts, encode_concept_groups
from .family import detect_family
from .patching import patched_clone, rows_as_read
from .weights import effective_weight, weight_device, weight_format, weight_shape

AUTO = 0.0          # an alpha input at 0: the paper's default for the concept kind


def resolve_alpha(value: float, kind: str, name: str) -> float:
    """0 means the paper's default for the concept kind; otherwise α must be ≥ 1."""
    if value == AUTO:
        return DEFAULT_ALPHA[kind]
    check_alpha(value, name)
    return float(value)


def erase_concepts(model, clip, forget_text: str, retain_text: str = "", kind: str = "style", templates_text: str = "",
                   alpha_forget: float = AUTO, alpha_retain: float = AUTO, strength: float = 1.0,
                   layers: str = LAYER_CHOICES[0], token_selection: str = TOKEN_SELECTIONS[0],
                   erase_pooled: bool = False, combination: str = PER_CONCEPT, robust_contexts: int = 0):
    """Everything the node does, as a function: returns ``(patched clone, report)``.

    ``robust_contexts`` > 0 is the robust mode (:mod:`cure_core.robust`): the forget concepts are also read with
    that many context words around them, and the automatic ``alpha_forget`` is at least :data:`ROBUST_ALPHA`.

    All inputs are checked before anything is computed; the input MODEL is never modified.
    """
    forget = parse_concepts(forget_text)
    if not forget:
        raise ValueError("No concept to forget: type at least one concept (one per line) in forget_concepts.")
    retain = parse_concepts(retain_text)
    check_disjoint(forget, retain)
    templates = parse_templates(templates_text, kind)
    alpha_f = resolve_alpha(alpha_forget, kind, "alpha_forget")
    if robust_contexts and alpha_forget == AUTO:      # the concept's energy is spread over more directions
        alpha_f = max(alpha_f, ROBUST_ALPHA)
    alpha_r = resolve_alpha(alpha_retain, kind, "alpha_retain")
    strength = check_strength(strength)
    check_choice(token_selection, TOKEN_SELECTIONS, "token selection")
    check_choice(combination, COMBINATIONS, "combination")
    forget_templates = templates + context_templates(templates, robust_contexts)
    family = detect_family(model)
    keys = family.text_layer_keys(model.model.state_dict().keys(), layers)
    if not keys:
        raise ValueError(f"No text-reading layers found in this {family.name} model: is it a complete checkpoint?")

    with_pooled = erase_pooled and family.pooled is not None
    readers = layers_by_rows(model, family, keys)
    encoded = encode_concept_groups(clip, [expand(forget, forget_templates), expand(retain, templates)],
                                    token_selection, list(readers), with_pooled)
    rows: dict[str, ConceptRows] = {}
    labels: list[str] = []
    for segments, sets in zip(readers, encoded):
        if sets is None:         # an encoder absent from this CLIP: the model reads zeros there
            continue
        forget_enc, retain_enc = sets
        rows.update(concept_rows(forget_enc, retain_enc, (len(forget_templates), len(templates)),
                                 row_group(family, segments)))
        labels += forget_enc.segments
    rows = {name: compact_rows(model, family, name, concept_set, alpha_r if "retain" in name else alpha_f)
            for name, concept_set in rows.items()}
    recipe = {"method": CURE_METHOD, "family": family.name, "forget": "\n".join(forget),
              "retain": "\n".join(retain), "concept_kind": kind, "templates": "\n".join(templates),
              "alpha_forget": number_text(alpha_f), "alpha_retain": number_text(alpha_r),
              "strength": number_text(strength), "token_selection": token_selection, "layers": layers,
              "erase_pooled": str(bool(with_pooled)), "combination": combination, "rows": ROWS_AS_READ,
              "robust_contexts": str(robust_contexts),
              "text_outputs": ", ".join(dict.fromkeys(labels))}
    return erase_rows(model, family, keys, rows, recipe, erase_pooled)


def layers_by_rows(model, family: Family, keys: list[str]) -> dict[tuple[TextSegment, ...], list[str]]:
    """The edited layers grouped by the encoder rows they read (one group, ``family.segments``, for most
    families; HiDream and Hunyuan-DiT have several): each group gets its own eraser."""
    unet_config = model.model.model_config.unet_config
    readers: dict[tuple[TextSegment, ...], list[str]] = {}
    for key in keys:
        readers.setdefault(family.reads(key, unet_config), []).append(key)
    return readers


def row_group(family: Family, segments: tuple[TextSegment, ...]) -> str | None:
    """The name the stored rows and spectra of a group of layers carry after ``@``: none for the families whose
    layers all read the same rows (their sets are plain "forget", "retain"), the segments' labels otherwise."""
    return None if family.layer_reads is None else " + ".join(s.label for s in segments)


def concept_rows(forget: EncodedConcepts, retain: EncodedConcepts | None, templates: tuple[int, int],
                 group: str | None = None) -> dict[str, ConceptRows]:
    """The encoded sets, grouped by concept, named for their group of layers (pooled vectors: one per prompt,
    ``templates`` (forget, retain) per concept, the same for every group)."""
    rows = {}
    for name, encoded, prompts in (("forget", forget, templates[0]), ("retain", retain, templates[1])):
        if encoded is None:
            continue
        concepts = tuple(encoded.tokens_per_concept)
        rows[row_set_name(name, group)] = ConceptRows(concepts, tuple(encoded.tokens_per_concept.values()),
                                                      encoded.rows)
        if encoded.pooled is not None:
            rows[f"pooled_{name}"] = ConceptRows(concepts, (prompts,) * len(concepts), encoded.pooled)
    return rows


def compact_rows(model, family: Family, name: str, concept_set: ConceptRows, alpha: float) -> ConceptRows:
    """A concept set as the erasure keeps it: the rows as the edited layers read them (the pooled vectors as they
    are), each concept's reduced to its spectral factor. Every spectrum, projector and figure comes out the
    same, and an erasure file holds a few rows per concept instead of every padded row of every prompt."""
    if not name.startswith("pooled_"):
        concept_set = ConceptRows(concept_set.concepts, concept_set.counts,
                                  rows_as_read(model, family, concept_set.rows))
    return concept_set.compacted(alpha)


@dataclass(frozen=True)
class _Group:
    """One set of rows that some of the edited layers read, and the eraser built from it."""
    label: str
    forget: ConceptRows
    retain: ConceptRows | None
    eraser: LowRankEraser
    layers: int


def erase_rows(model, family: Family, keys: list[str], rows: dict[str, ConceptRows], recipe: dict[str, str],
               erase_pooled: bool = False):
    """The erasure of the encoded concept sets ``rows`` (raw encoder rows, per group of layers that read the same
    rows, see :func:`row_group`) with the recipe's α and strength: ``(patched clone, report)``. Shared by the
    erase node and by merging saved erasures. Layers whose group has no rows (an encoder the CLIP lacked) are
    left as they are."""
    alpha_f, alpha_r = float(recipe["alpha_forget"]), float(recipe["alpha_retain"])
    strength = float(recipe["strength"])
    combination = recipe_setting(recipe, "combination")     # saved before per-concept spectra: one spectrum
    as_read = recipe_setting(recipe, "rows") == ROWS_AS_READ
    planned = []
    for segments, group_keys in layers_by_rows(model, family, keys).items():
        group = row_group(family, segments)
        forget = rows.get(row_set_name("forget", group))
        if forget is None:
            continue
        width = weight_shape(model, group_keys[0])[1]
        if forget.rows.shape[1] != width:
            raise ValueError(f"The CLIP gives {forget.rows.shape[1]}-wide embeddings but this {family.name} "
                             f"model's {group_keys[0].removesuffix('.weight')} reads {width}-wide ones: "
                             "connect the CLIP that belongs to this model.")
        planned.append((segments, group, group_keys, forget, rows.get(row_set_name("retain", group)),
                        weight_device(model, group_keys[0])))
    if not planned:
        raise ValueError(f"No encoder rows for any of this {family.name} model's text-reading layers (the CLIP has "
                         "none of the text encoders they read): connect the CLIP that belongs to this model.")
    with_pooled = "pooled_forget" in rows
    progress = comfy.utils.ProgressBar(sum(len(p[2]) for p in planned) + int(with_pooled))
    groups: list[_Group] = []
    by_key: dict[str, LayerEdit] = {}
    spectra: dict[str, torch.Tensor] = {}
    for segments, group, group_keys, forget, retain, device in planned:
        forget_rows, retain_rows = (None if r is None else r.rows.to(device) if as_read else
                                    rows_as_read(model, family, r.rows.to(device)) for r in (forget, retain))
        eraser = concept_set_eraser(forget_rows, forget.counts, retain_rows, () if retain is None else retain.counts,
                                    alpha_f, alpha_r, combination)
        groups.append(_Group(", ".join(s.label for s in segments), forget, retain, eraser, len(group_keys)))
        spectra[row_set_name("forget_energy", group)] = eraser.energy
        spectra[row_set_name("forget_gains", group)] = eraser.gains
        if eraser.retain_energy is not None:
            spectra[row_set_name("retain_energy", group)] = eraser.retain_energy
            spectra[row_set_name("retain_gains", group)] = eraser.retain_gains
        # The report's figures depend on the rows only through their Gram matrix: measured on a few rows.
        measure = LayerMeasure(eraser, forget_rows, retain_rows, sketch=True)
        for key in group_keys:   # one float32 copy of one weight at a time (SDXL has 140 such weights)
            by_key[key] = measure.edit(key, effective_weight(model, key))
            progress.update(1)
    skipped = [k for k in keys if k not in by_key]
    edits = [by_key[k] for k in keys if k in by_key]              # state-dict order
    pooled_edit = None
    if with_pooled:
        pooled_edit = _pooled_edit(model, family, rows["pooled_forget"], rows.get("pooled_retain"), alpha_f, alpha_r,
                                   combination)
        edits.append(pooled_edit)
        progress.update(1)
    patched = patched_clone(model, edits, strength, recipe, rows, spectra)
    report = _report(family, model, recipe, groups, edits, pooled_edit, erase_pooled, skipped)
    return patched, report


def _pooled_edit(model, family: Family, forget: ConceptRows, retain: ConceptRows | None,
                 alpha_f: float, alpha_r: float, combination: str) -> LayerEdit:
    """The same spectral edit on the pooled vector, applied to the leading columns of the pooled layer."""
    key = family.pooled.key
    weight = effective_weight(model, key)
    width = forget.rows.shape[1]
    if weight.shape[1] < width:
        raise ValueError(f"{key} reads {weight.shape[1]} features, fewer than the {width}-wide pooled vector.")
    forget_pooled = forget.rows.to(weight.device)
    retain_pooled = None if retain is None else retain.rows.to(weight.device)
    eraser = concept_set_eraser(forget_pooled, forget.counts, retain_pooled, () if retain is None else retain.counts,
                                alpha_f, alpha_r, combination)
    return edit_layer(key, weight, eraser, forget_pooled, retain_pooled, columns=width)


def _report(family: Family, model, recipe: dict[str, str], groups: list[_Group], edits: list[LayerEdit],
            pooled_edit: LayerEdit | None, erase_pooled: bool, skipped: list[str]) -> str:
    def counts(concept_rows: ConceptRows) -> str:
        return ", ".join(f"{c} ({n} rows)" for c, n in zip(concept_rows.concepts, concept_rows.counts))

    def subspace(eraser: LowRankEraser) -> str:
        return f"rank {eraser.rank} of {eraser.dim}; top energy shares " + ", ".join(
            f"{float(r):.3f}" for r in eraser.energy[:5])

    templates = recipe["templates"].splitlines()
    first = groups[0]
    text_edits = [e for e in edits if e is not pooled_edit]
    removed = [e.forget_removed for e in text_edits]
    layers, strength = recipe["layers"], recipe["strength"]
    alpha_f, alpha_r = recipe["alpha_forget"], recipe["alpha_retain"]
    lines = [
        f"CURE Spectral Eraser on {family.name} (ComfyUI model type {type(model.model.model_config).__name__})",
        f"Embeddings: {family.encoder}; rows from tokenizer output(s) {recipe['text_outputs']}: "
        f"{recipe['token_selection']}; {len(templates)} template(s) per concept; concepts combined: "
        f"{recipe_setting(recipe, 'combination')}",
    ]
    if len(groups) == 1:
        lines += [f"Forget (alpha {alpha_f}): {counts(first.forget)}",
                  f"Retain (alpha {alpha_r}): {counts(first.retain) if first.retain else 'none'}",
                  f"Erased subspace: {subspace(first.eraser)}"]
    else:       # layers that read different encoder outputs: one eraser per set of rows they read
        retain = recipe["retain"].splitlines()
        lines += [f"Forget (alpha {alpha_f}): {', '.join(recipe['forget'].splitlines())}",
                  f"Retain (alpha {alpha_r}): {', '.join(retain) if retain else 'none'}",
                  f"Erased subspaces ({len(groups)}, one per set of encoder rows the layers read):"]
        lines += [f"  {g.label} ({g.layers} layer{'' if g.layers == 1 else 's'}; "
                  f"{len(g.forget.rows)} forget, {0 if g.retain is None else len(g.retain.rows)} retain rows): "
                  f"{subspace(g.eraser)}" for g in groups]
    lines += [
        f"Weights as stored: {weight_format(model, text_edits[0].key)} (edits computed from them dequantized)",
        f"Edited {len(text_edits)} layer{'' if len(text_edits) == 1 else 's'} ({layers}) at strength {strength}; patches hold "
        f"{sum(e.numel for e in edits) * 4 / 2**20:.2f} MiB",
        f"Forget output energy removed at full strength: mean {sum(removed) / len(removed):.2%}, "
        f"min {min(removed):.2%}, max {max(removed):.2%}",
    ]
    contexts = [int(n) for n in recipe_setting(recipe, "robust_contexts").split(",")]
    if len(contexts) > 1:           # a union of erasures made with different settings
        lines.append(f"Robust mode in part: the combined erasures read their forget concepts with "
                     f"{', '.join(map(str, contexts))} context words (0 = plain)")
    elif contexts[0]:
        lines.append(f"Robust mode: each forget concept also read with {contexts[0]} context words before and after "
                     f"it ({2 * contexts[0]} more prompts per concept)")
    if skipped:
        lines.append(f"Not edited: {len(skipped)} layer(s) that read an encoder this CLIP does not have (the model "
                     f"gets zeros there), e.g. {skipped[0].removesuffix('.weight')}")
    if first.retain is not None:
        moved = [e.retain_change for e in text_edits]
        lines.append(f"Retained outputs moved: mean {sum(moved) / len(moved):.2%}, max {max(moved):.2%}")
    if pooled_edit is not None:
        lines.append(f"Pooled path {pooled_edit.key}: forget energy removed {pooled_edit.forget_removed:.2%}")
    elif erase_pooled:
        lines.append(f"Pooled path: {family.name} has none; nothing else edited.")
    lines.append("Per layer:")
    lines.append(format_layer_table(edits))
    return "\n".join(lines)
