"""The **Erase Concepts (UCE baseline)** node: its schema and a call into
:func:`comfy_glue.uce.erase_concepts_uce`."""
from __future__ import annotations

from comfy_api.latest import io, ui

from ..comfy_glue.uce import erase_concepts_uce
from ..cure_core.concepts import CONCEPT_KINDS
from ..cure_core.families import LAYER_CHOICES
from .category import CATEGORY


class EraseConceptsUCE(io.ComfyNode):
    """Node wrapper of :func:`~comfy_glue.uce.erase_concepts_uce`."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CURE_EraseConceptsUCE",
            display_name="Erase Concepts (UCE baseline)",
            category=CATEGORY,
            description="Unified Concept Editing (Gandikota et al. 2024), the closed-form baseline CURE is compared "
                        "with: each concept's embeddings are mapped onto a guide's, preserved ones kept. Same "
                        "layers and patch mechanism as the CURE node; the input model is unchanged.",
            inputs=[
                io.Model.Input("model", tooltip="SD1.x, SD2.x or another single-text-encoder model."),
                io.Clip.Input("clip", tooltip="The CLIP that belongs to this model."),
                io.String.Input("forget_concepts", multiline=True, default="", tooltip="One concept per line."),
                io.String.Input("preserve_concepts", multiline=True, default="",
                                tooltip="Concepts whose outputs UCE keeps (its preservation term), one per line."),
                io.String.Input("guide", default="", tooltip="What erased concepts should look like instead; "
                                                             "empty = the prompt without the concept."),
                io.Combo.Input("concept_kind", options=CONCEPT_KINDS, default="object",
                               tooltip="Picks the prompt templates (as in the CURE node)."),
                io.String.Input("templates", multiline=True, default="",
                                tooltip="Optional templates with {} for the concept; empty uses the kind's."),
                io.Float.Input("lamb", default=0.5, min=0.001, max=100.0, step=0.01,
                               tooltip="UCE's lambda: how strongly the weights stay close to the original."),
                io.Float.Input("erase_scale", default=1.0, min=0.01, max=100.0, step=0.01,
                               tooltip="UCE's weight on sending the erased embeddings to the guide."),
                io.Float.Input("preserve_scale", default=1.0, min=0.0, max=100.0, step=0.01,
                               tooltip="UCE's weight on keeping the preserved concepts' outputs."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How much of the edit to apply (1 = UCE's solution)."),
                io.Combo.Input("layers", options=LAYER_CHOICES, default=LAYER_CHOICES[0],
                               tooltip="Which text-reading layers to edit (as in the CURE node)."),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="A patched copy of the model."),
                     io.String.Output(display_name="report", tooltip="What was edited, per layer.")],
        )

    @classmethod
    def execute(cls, model, clip, forget_concepts: str, preserve_concepts: str, guide: str, concept_kind: str,
                templates: str, lamb: float, erase_scale: float, preserve_scale: float, strength: float,
                layers: str) -> io.NodeOutput:
        patched, report = erase_concepts_uce(model, clip, forget_concepts, preserve_concepts, guide, concept_kind,
                                             templates, lamb, erase_scale, preserve_scale, strength, layers)
        return io.NodeOutput(patched, report, ui=ui.PreviewText(report))
