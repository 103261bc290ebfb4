"""The demo loaders: **Tiny Demo Model** (random weights, every family) and **Miniature World Model** (the
trained miniature model), so that workflows run without any download. Their models are in :mod:`testbed`."""
from __future__ import annotations

from comfy_api.latest import io

from ..testbed.tiny_models import DEMO_FAMILIES, tiny_checkpoint
from .category import DEMO_CATEGORY


class TinyDemoModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CURE_TinyDemoModel",
            display_name="Tiny Demo Model (random weights)",
            category=DEMO_CATEGORY,
            description="Builds ComfyUI's own SD1.x/SD2.x/SDXL/SD3/Flux/Chroma/Wan/PixArt/Cosmos/Lumina 2/Qwen-Image/HiDream/"
                        "Hunyuan-DiT classes at a tiny size with seeded random weights "
                        "and real tokenizers. It draws noise, not pictures: use it to try the erasure nodes, "
                        "test workflows, or run the pack without downloading a checkpoint.",
            inputs=[
                io.Combo.Input("family", options=DEMO_FAMILIES, default=DEMO_FAMILIES[0],
                               tooltip="Which architecture to build."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1,
                             tooltip="Seed of the random weights: the same seed gives the same model."),
            ],
            outputs=[io.Model.Output(tooltip="The tiny diffusion model (random weights)."),
                     io.Clip.Output(tooltip="Its text encoder: the family's real tokenizers, tiny random encoders."),
                     io.Vae.Output(tooltip="A tiny random VAE of the family's latent kind.")],
        )

    @classmethod
    def execute(cls, family: str, seed: int) -> io.NodeOutput:
        return io.NodeOutput(*tiny_checkpoint(family, seed))


class MiniatureWorldModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CURE_MiniatureWorldModel",
            display_name="Miniature World Model (trained demo)",
            category=DEMO_CATEGORY,
            description="A small SD1.x-architecture model the pack trained on its procedural world of shapes, "
                        "colours, fill styles and backgrounds (docs/miniature-world.md). It really draws what it is "
                        "prompted with, e.g. 'a striped red circle on a white background', so erasing 'red' "
                        "shows. Use an Empty Latent Image of 128×128: it decodes to 32×32 pictures.",
            inputs=[],
            outputs=[io.Model.Output(tooltip="The trained SD1.x-style UNet."),
                     io.Clip.Output(tooltip="Its small CLIP text encoder, with the real SD1 tokenizer."),
                     io.Vae.Output(tooltip="Its autoencoder: 16x16 latents decode to 32x32 pictures.")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        from ..testbed.miniature import load_miniature
        model, clip, vae, _ = load_miniature()
        return io.NodeOutput(model, clip, vae)
