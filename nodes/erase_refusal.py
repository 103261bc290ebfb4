"""The **Erase Concepts (Refusal Vector)** node: its schema and a call into
:func:`comfy_glue.refusal.erase_with_refusal`."""
from __future__ import annotations

from comfy_api.latest import io, ui

from ..comfy_glue.refusal import DENOISER_RECIPES, MEASURED_RECIPE, SOURCES, erase_with_refusal
from ..cure_core.families import LAYER_CHOICES
from ..cure_core.refusal import DEFAULT_NEUTRAL_PROMPTS, MODES
from .category import CATEGORY


class EraseConceptsRefusal(io.ComfyNode):
    """Node wrapper of :func:`~comfy_glue.refusal.erase_with_refusal`."""

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
                                        "line, the two prompts separated by '|'. Several concepts: a blank line "
                                        "between their blocks of pairs gives each its own refusal direction."),
                io.String.Input("neutral_prompts", multiline=True, default="\n".join(DEFAULT_NEUTRAL_PROMPTS),
                                tooltip="Everyday prompts without the concept, one per line: directions in which "
                                        "they vary are protected (contrastive PCA). Empty: plain mean difference."),
                io.Int.Input("rank", default=100, min=1, max=4096,
                             tooltip="k, how many contrastive directions span the refusal subspace (paper: 100; "
                                     "only directions with a positive contrast are kept). The denoiser source's "
                                     "measured recipe keeps at most 16, shared among a list's concepts."),
                io.Float.Input("contrast", default=1.0, min=0.0, max=100.0, step=0.05,
                               tooltip="α in C = C_r − α C_e: how strongly neutral variation is discounted."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="λ in W' = W (I − λ q qᵀ): 1 removes the refusal direction entirely."),
                io.Combo.Input("mode", options=MODES, default=MODES[0],
                               tooltip="Project out the single refusal direction q (in the subspace), or the "
                                       "whole rank-k subspace. The denoiser source's measured recipe always "
                                       "projects the subspace."),
                io.Combo.Input("source", options=SOURCES, default=SOURCES[0],
                               tooltip="Where the activations come from: the text encoder's token embeddings (fast; "
                                       "edits the layers that read the text), or the denoiser itself run for a few "
                                       "steps on every prompt (the paper's method; edits the attention output "
                                       "projections that carry the text into the image, see denoiser_recipe)."),
                io.Combo.Input("layers", options=LAYER_CHOICES, default=LAYER_CHOICES[0],
                               tooltip="Text source: which layers to edit, every layer that reads the text tokens "
                                       "or, on the UNets, the cross-attention keys or values only."),
                io.Int.Input("denoiser_blocks", default=2, min=1, max=64,
                             tooltip="Denoiser source, paper recipe: how many of the last blocks to edit (the "
                                     "paper: 2). The measured recipe edits every block."),
                io.Int.Input("denoiser_steps", default=4, min=1, max=50,
                             tooltip="Denoiser source: sampling steps per prompt (noise levels seen)."),
                io.Int.Input("denoiser_size", default=16, min=4, max=256,
                             tooltip="Denoiser source: latent width and height of the runs (16 = 128 px for an "
                                     "8x VAE); small is enough to read the concept's activations."),
                io.Combo.Input("denoiser_recipe", options=DENOISER_RECIPES, default=MEASURED_RECIPE, optional=True,
                               tooltip="Denoiser source: how activations are read and projected. Measured (default): "
                                       "every image token's input to every block's attention output projection, "
                                       "a rank-16 subspace, the removed part set to the safe prompts' mean (a "
                                       "bias change; erases most concepts of the pack's miniature model). Paper: "
                                       "the token mean of the last blocks' inputs, with the mode above, the removed "
                                       "part set to zero (barely erases there; docs/method.md says why)."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="A patched copy of the model that refuses the concept."),
                io.String.Output(display_name="report", tooltip="What was built and how much it removes, per layer."),
            ],
        )

    @classmethod
    def execute(cls, model, clip, pairs: str, neutral_prompts: str, rank: int, contrast: float, strength: float,
                mode: str, source: str, layers: str, denoiser_blocks: int, denoiser_steps: int,
                denoiser_size: int, denoiser_recipe: str = MEASURED_RECIPE) -> io.NodeOutput:
        patched, report = erase_with_refusal(model, clip, pairs, neutral_prompts, rank, contrast, strength, mode,
                                             source, layers, denoiser_blocks, denoiser_steps, denoiser_size,
                                             denoiser_recipe)
        return io.NodeOutput(patched, report, ui=ui.PreviewText(report))
