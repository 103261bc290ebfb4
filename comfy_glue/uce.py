"""UCE's closed-form edit on a ComfyUI MODEL (the **Erase Concepts (UCE baseline)** node): the same layers
and patch mechanism as CURE, so that the two can be compared on equal terms."""
from __future__ import annotations

import torch
import comfy.utils

from ..cure_core.concepts import CONCEPT_AND_END, expand, parse_concepts, parse_templates
from ..cure_core.checks import check_disjoint, check_strength
from ..cure_core.edit import LayerMeasure, format_layer_table
from ..cure_core.families import LAYER_CHOICES
from ..cure_core.uce import uce_eraser
from .encoding import encode_concept_sets, encode_prompts
from .family import detect_family
from .patching import patched_clone
from .weights import effective_weight, weight_device, weight_shape


def erase_concepts_uce(model, clip, forget_text: str, preserve_text: str = "", guide: str = "",
                       kind: str = "object", templates_text: str = "", lamb: float = 0.5, erase_scale: float = 1.0,
                       preserve_scale: float = 1.0, strength: float = 1.0, layers: str = LAYER_CHOICES[0]):
    """UCE on ``model``: returns ``(patched clone, report)``.

    Rows follow the CURE node (each concept through the kind's templates, its tokens plus the end
    token); each forget row is sent to the end-token row of the same template filled with ``guide``
    (empty: the template without the concept, so templates that are only ``{}`` are skipped), UCE's
    "erase towards a guide concept".
    """
    forget = parse_concepts(forget_text)
    if not forget:
        raise ValueError("No concept to forget: type at least one concept (one per line).")
    preserve = parse_concepts(preserve_text)
    check_disjoint(forget, preserve, "erased", "preserved")
    for name, value in (("lamb", lamb), ("erase_scale", erase_scale)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0 (got {value}).")
    if preserve_scale < 0:
        raise ValueError(f"preserve_scale must be >= 0 (got {preserve_scale}).")
    strength = check_strength(strength)
    templates = parse_templates(templates_text, kind)
    if not guide.strip():       # a template that is only the concept leaves no guide prompt to map onto
        templates = tuple(t for t in templates if t.replace("{}", "").strip())
        if not templates:
            raise ValueError("With an empty guide, UCE needs templates with words around {} (e.g. 'a photo of {}').")
    family = detect_family(model)
    if len(family.segments) != 1 or family.text_norm is not None:
        raise ValueError(f"The UCE baseline supports single-encoder families without a text norm (SD1.x, SD2.x, "
                         f"Wan, PixArt, ...); {family.name} is not one of them: use Erase Concepts (CURE).")
    keys = family.text_layer_keys(model.model.state_dict().keys(), layers)
    if not keys:
        raise ValueError(f"No text-reading layers found in this {family.name} model.")

    forget_prompts = expand(forget, templates)
    per_prompt = encode_concept_sets(clip, [[p] for p in forget_prompts] + [expand(preserve, templates)],
                                     CONCEPT_AND_END, family.segments)
    *forget_sets, preserve_set = per_prompt
    guides = encode_prompts(clip, [" ".join(f"{prefix}{guide}{suffix}".split()) for _, prefix, suffix in forget_prompts],
                            family.segments)
    segment = family.segments[0]          # EncodedPrompt.rows is keyed by TextSegment
    forget_rows = torch.cat([s.rows for s in forget_sets])
    targets = torch.cat([g.rows[segment][-1:].expand(len(s.rows), -1) for s, g in zip(forget_sets, guides)])
    preserve_rows = None if preserve_set is None else preserve_set.rows
    device, width = weight_device(model, keys[0]), weight_shape(model, keys[0])[1]
    if forget_rows.shape[1] != width:
        raise ValueError(f"The CLIP gives {forget_rows.shape[1]}-wide embeddings but the model reads "
                         f"{width}-wide ones: connect the CLIP that belongs to this model.")
    eraser = uce_eraser(forget_rows.to(device), targets.to(device),
                        None if preserve_rows is None else preserve_rows.to(device), lamb, erase_scale, preserve_scale)
    progress = comfy.utils.ProgressBar(len(keys))
    measure = LayerMeasure(eraser, forget_rows.to(device), None if preserve_rows is None else preserve_rows.to(device))
    edits = []
    for key in keys:
        edits.append(measure.edit(key, effective_weight(model, key)))
        progress.update(1)
    recipe = {"method": "UCE", "family": family.name, "forget": "\n".join(forget), "retain": "\n".join(preserve),
              "guide": guide, "concept_kind": kind, "templates": "\n".join(templates), "lamb": f"{lamb:g}",
              "erase_scale": f"{erase_scale:g}", "preserve_scale": f"{preserve_scale:g}", "strength": f"{strength:g}",
              "layers": layers}
    patched = patched_clone(model, edits, strength, recipe)
    report = "\n".join([
        f"UCE on {family.name}: {len(forget)} concept(s) towards {guide or 'the empty prompt'!r}, "
        f"{len(preserve)} preserved; lambda {lamb:g}, erase scale {erase_scale:g}, preserve scale {preserve_scale:g}",
        f"Rank-{eraser.rank} update on {len(edits)} layer(s) at strength {strength:g}",
        "Per layer:", format_layer_table(edits)])
    return patched, report
