"""The **Erase Concepts (CURE)** node: its schema and a call into :func:`comfy_glue.cure.erase_concepts`."""
from __future__ import annotations

from comfy_api.latest import io, ui

from ..comfy_glue.cure import AUTO, erase_concepts
from ..cure_core.concepts import CONCEPT_KINDS, TOKEN_SELECTIONS
from ..cure_core.families import LAYER_CHOICES
from ..cure_core.robust import MAX_CONTEXTS
from ..cure_core.spectral import COMBINATIONS, PER_CONCEPT
from .category import CATEGORY


class EraseConceptsCURE(io.ComfyNode):
    """Node wrapper of :func:`~comfy_glue.cure.erase_concepts`."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CURE_EraseConcepts",
            display_name="Erase Concepts (CURE)",
            category=CATEGORY,
            description="Removes concepts from a diffusion model in closed form (CURE's Spectral Eraser): the "
                        "layers that read the text encoder are projected away from the concepts' embeddings. "
                        "Returns a patched copy; the input model is unchanged.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to erase concepts from (SD1.x, SD2.x, SDXL, "
                                                "SD3, Flux, Chroma, Wan 2.1/2.2, LTX-Video, Mochi, PixArt, HunyuanVideo, "
                                                "Qwen-Image, Lumina 2, Cosmos, Stable Cascade, HiDream, Hunyuan-DiT)."),
                io.Clip.Input("clip", tooltip="The CLIP that belongs to this model: concepts are encoded with it, "
                                              "including any CLIPSetLastLayer or CLIP LoRA applied before."),
                io.String.Input("forget_concepts", multiline=True, default="",
                                placeholder="one concept per line, e.g.\nVan Gogh\nStarry Night",
                                tooltip="Concepts to remove, one per line. Lines starting with # are ignored."),
                io.String.Input("retain_concepts", multiline=True, default="",
                                placeholder="optional, one per line, e.g.\npainting\nMonet",
                                tooltip="Concepts to protect, one per line: the edit avoids their directions, "
                                        "so neighbours of the erased concept survive."),
                io.Combo.Input("concept_kind", options=CONCEPT_KINDS, default="style",
                               tooltip="Picks the default prompt templates and alphas: 2 for style, object and "
                                       "identity, 5 for explicit content (CURE's settings). 'raw text' encodes "
                                       "each line as it is."),
                io.String.Input("templates", multiline=True, default="",
                                placeholder="optional, one per line with {} for the concept, e.g.\n"
                                            "a painting in the style of {}",
                                tooltip="Prompt templates that place each concept in context; empty uses the "
                                        "kind's defaults."),
                io.Float.Input("alpha_forget", default=AUTO, min=0.0, max=1000.0, step=0.1,
                               tooltip="Expansion strength for the forget set (>= 1; larger erases the whole "
                                       "concept span more evenly). 0 = the concept kind's default."),
                io.Float.Input("alpha_retain", default=AUTO, min=0.0, max=1000.0, step=0.1,
                               tooltip="Expansion strength for the retain set (>= 1; larger protects retained "
                                       "directions more completely). 0 = the concept kind's default."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How much of the erasure to apply: W' = W - strength * W P_dis."),
                io.Combo.Input("layers", options=LAYER_CHOICES, default=LAYER_CHOICES[0],
                               tooltip="Which layers to edit: every layer that reads the text tokens (SD1.x/"
                                       "SD2.x/SDXL: cross-attention keys and values, as in CURE; the transformers: "
                                       "the first projection of the text tokens), or on the UNets the keys or values only."),
                io.Combo.Input("token_selection", options=TOKEN_SELECTIONS, default=TOKEN_SELECTIONS[0],
                               tooltip="Which embeddings span the concept. 'concept contribution' (default): "
                                       "every row the model reads of each prompt minus the same row of the "
                                       "template without the concept, so what all prompts share is not erased. "
                                       "The paper's choices, rows of the prompt itself: the concept's tokens plus "
                                       "the end token, its tokens only, or every token of the prompt."),
                io.Boolean.Input("erase_pooled", default=False,
                                 tooltip="SDXL, SD3, Flux, HunyuanVideo, Stable Cascade, HiDream: also erase the "
                                         "concept from the pooled text vector (SDXL: CLIP-G into label_emb; SD3: "
                                         "CLIP-L+G into y_embedder; Flux, HunyuanVideo: CLIP-L into vector_in; Stable "
                                         "Cascade: CLIP-G into clip_txt_pooled_mapper; HiDream: CLIP-L+G into "
                                         "p_embedder). Off by default (docs/method.md says why)."),
                io.Combo.Input("combination", options=COMBINATIONS, default=PER_CONCEPT, optional=True,
                               tooltip="How several concepts make one edit. 'per concept (joint)' (default): each "
                                       "concept keeps its own spectrum, so a list erases each concept as strongly "
                                       "as erasing it alone, and retained concepts keep their own directions. "
                                       "'one spectrum (paper)': CURE's single spectrum over all the rows, which "
                                       "dilutes each concept's share as the list grows."),
                io.Int.Input("robust_contexts", default=0, min=0, max=MAX_CONTEXTS, optional=True,
                             tooltip="Robust mode: also read each forget concept with this many ordinary words "
                                     "before and after it, so that an extra word in a prompt does not bring it "
                                     "back (0 = off; 12 is what the benchmark measures). Costs 2 prompts per word "
                                     "and concept to encode; alpha_forget at 0 (auto) becomes 10 in this mode. "
                                     "See docs/method.md, 'Robust mode'."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="A patched copy of the model without the concepts."),
                io.String.Output(display_name="report", tooltip="What was erased, and how much, per layer."),
            ],
        )

    @classmethod
    def execute(cls, model, clip, forget_concepts: str, retain_concepts: str, concept_kind: str, templates: str,
                alpha_forget: float, alpha_retain: float, strength: float, layers: str, token_selection: str,
                erase_pooled: bool, combination: str = PER_CONCEPT, robust_contexts: int = 0) -> io.NodeOutput:
        patched, report = erase_concepts(model, clip, forget_concepts, retain_concepts, concept_kind, templates,
                                         alpha_forget, alpha_retain, strength, layers, token_selection, erase_pooled,
                                         combination, robust_contexts)
        return io.NodeOutput(patched, report, ui=ui.PreviewText(report))
