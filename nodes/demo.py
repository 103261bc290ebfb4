"""Demo loader: a tiny random-weight model so that workflows run without any download."""
from __future__ import annotations

from comfy_api.latest import io

from .erase_cure import CATEGORY
from .tiny_models import DEMO_FAMILIES, tiny_checkpoint


class TinyDemoModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CURE_TinyDemoModel",
            display_name="Tiny Demo Model (random weights)",
            category=f"{CATEGORY}/demo",
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
            outputs=[io.Model.Output(), io.Clip.Output(), io.Vae.Output()],
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
            category=f"{CATEGORY}/demo",
            description="A small SD1.x-architecture model the pack trained on its procedural world of shapes, "
                        "colours, fill styles and backgrounds (see the README). It really draws what it is "
                        "prompted with, e.g. 'a striped red circle on a white background', so erasing 'red' "
                        "shows. Use an Empty Latent Image of 128×128: it decodes to 32×32 pictures.",
            inputs=[],
            outputs=[io.Model.Output(), io.Clip.Output(), io.Vae.Output()],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        from .miniature import load_miniature
        model, clip, vae, _ = load_miniature()
        return io.NodeOutput(model, clip, vae)
