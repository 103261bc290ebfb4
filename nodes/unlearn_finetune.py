"""The **Unlearn Concept (fine-tune)** node: its schema and a call into
:func:`comfy_glue.unlearning.unlearn_concept`."""
from __future__ import annotations

from comfy_api.latest import io, ui

from ..comfy_glue.unlearning import ATTENTION, LAYER_SETS, unlearn_concept
from ..cure_core.unlearning import (DEFAULT_ETA, DEFAULT_ITERATIONS, DEFAULT_LEARNING_RATE, DEFAULT_LOCALISE_WEIGHT,
                                    DEFAULT_TEMPLATES, MAX_ITERATIONS)
from .category import CATEGORY


class UnlearnConceptFinetune(io.ComfyNode):
    """Node wrapper of :func:`~comfy_glue.unlearning.unlearn_concept`."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CURE_UnlearnConceptFinetune",
            display_name="Unlearn Concept (fine-tune)",
            category=CATEGORY,
            description="Unlearns a concept by fine-tuning a small LoRA (T2VUnlearning, Ye et al. 2025): the "
                        "model's prediction for the concept is trained toward the frozen model's prediction guided "
                        "away from it, at states the model reaches while drawing the concept (no data set). Slower "
                        "than the closed-form nodes (minutes, not seconds); the fine-tuned baseline they are "
                        "compared against. Returns a patched copy; the input model is unchanged.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion or video model to fine-tune."),
                io.Clip.Input("clip", tooltip="The text encoder that belongs to this model."),
                io.String.Input("concepts", multiline=True, default="",
                                placeholder="one concept per line, e.g.\nnudity",
                                tooltip="The concepts to unlearn, one per line."),
                io.String.Input("keep_concepts", multiline=True, default="",
                                tooltip="Concepts to keep as they are, one per line: the adapted model's "
                                        "prediction for them is held to the original's. Empty: the empty prompt's "
                                        "prediction is held, so the rest drifts less."),
                io.String.Input("templates", multiline=True, default="\n".join(DEFAULT_TEMPLATES),
                                tooltip="Prompts the concepts are written through, one per line, each with one "
                                        "'{}' where the concept goes (the paper rewrites prompts with an LLM; "
                                        "these stand in). The keep concepts use them too."),
                io.String.Input("extra_prompts", multiline=True, default="",
                                tooltip="Your own prompts that show the concept, one per line (long, detailed "
                                        "prompts make the unlearning hold for them)."),
                io.Float.Input("eta", default=DEFAULT_ETA, min=0.0, max=100.0, step=0.1,
                               tooltip="How far the target is pushed away from the concept: v(∅) − η (v(c) − v(∅)). "
                                       "0 does not erase; the paper uses about 3 for nudity, 5 for faces."),
                io.Int.Input("iterations", default=DEFAULT_ITERATIONS, min=1, max=MAX_ITERATIONS,
                             tooltip="Training steps (the paper: 500). Each samples the concept part-way from noise."),
                io.Float.Input("learning_rate", default=DEFAULT_LEARNING_RATE, min=1e-7, max=1.0, step=1e-5,
                               tooltip="Adam's learning rate for the LoRA (the paper: 1e-4 for a rank-128 adapter)."),
                io.Int.Input("rank", default=4, min=1, max=1024, tooltip="The LoRA's rank."),
                io.Float.Input("keep_weight", default=1.0, min=0.0, max=10000.0, step=0.1,
                               tooltip="Weight of the keep concepts' loss (the empty prompt's without any; 0: no "
                                       "preservation term)."),
                io.Float.Input("guidance", default=5.0, min=1.0, max=100.0, step=0.5,
                               tooltip="CFG scale of the sampling that produces the training states."),
                io.Combo.Input("layers", options=LAYER_SETS, default=ATTENTION,
                               tooltip="Where the LoRA goes: every attention projection of the denoiser, or only "
                                       "the layers that read the text (what the closed-form nodes edit)."),
                io.Int.Input("latent_size", default=64, min=4, max=512,
                             tooltip="Latent width and height of the training states (64 = 512 px for an 8x VAE)."),
                io.Int.Input("latent_frames", default=1, min=1, max=64,
                             tooltip="Video models: latent frames of the training states (Wan: (frames − 1)/4 + 1)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1,
                             tooltip="Seeds the LoRA's initialisation, the noise and the prompt order."),
                io.Float.Input("localise_weight", default=DEFAULT_LOCALISE_WEIGHT, min=0.0, max=10000.0, step=0.1,
                               optional=True,
                               tooltip="The paper's localisation: weight of the LoRA's change to the concept's "
                                       "prediction outside the concept's region (where the model's cross-attention "
                                       "to the concept's words stays under a tenth of its range, per frame). 0: "
                                       "off. Needs cross-attention (UNets, Wan); Flux and SD3 attend jointly."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="A patched copy of the model with the learned LoRA."),
                io.String.Output(display_name="report", tooltip="What was trained, and the loss at start and end."),
                io.Image.Output(display_name="loss_curve", tooltip="The loss per iteration."),
            ],
        )

    @classmethod
    def execute(cls, model, clip, concepts: str, keep_concepts: str, templates: str, extra_prompts: str, eta: float,
                iterations: int, learning_rate: float, rank: int, keep_weight: float, guidance: float, layers: str,
                latent_size: int, latent_frames: int, seed: int,
                localise_weight: float = DEFAULT_LOCALISE_WEIGHT) -> io.NodeOutput:
        patched, report, curve = unlearn_concept(model, clip, concepts, keep_concepts, extra_prompts, templates, eta,
                                                 iterations, learning_rate, rank, keep_weight, guidance, layers,
                                                 latent_size, latent_frames, seed, localise_weight)
        return io.NodeOutput(patched, report, curve, ui=ui.PreviewText(report))
