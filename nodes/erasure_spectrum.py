"""The **Erasure Spectrum** node: its schema and a call into :mod:`comfy_glue.spectrum_chart`."""
from __future__ import annotations

from comfy_api.latest import io

from ..comfy_glue.spectrum_chart import spectrum_image
from .category import CATEGORY


class ErasureSpectrum(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CURE_ErasureSpectrum",
            display_name="Erasure Spectrum",
            category=CATEGORY,
            description="Draws what the erasures on a MODEL do: the energy spectrum of the forget and retain sets "
                        "with CURE's expansion applied, and per edited layer the forget energy removed and how far "
                        "retained outputs moved (HiDream, Hunyuan-DiT: a row of spectra per group of layers that "
                        "read the same encoder rows). Connect the image to Preview Image or Save Image.",
            inputs=[
                io.Model.Input("model", tooltip="The model output of an erase node, Apply Erasure File or Combine "
                                                "Erasure Files."),
                io.Int.Input("width", default=960, min=480, max=4096, step=16,
                             tooltip="Width of the picture in pixels."),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The charts, as an IMAGE.")],
        )

    @classmethod
    def execute(cls, model, width: int) -> io.NodeOutput:
        return io.NodeOutput(spectrum_image(model, width))
