"""The **Save Erasure as LoRA** node: its schema and a call into :mod:`comfy_glue.lora_export`."""
from __future__ import annotations

from comfy_api.latest import io, ui

from ..comfy_glue.lora_export import LORA_DTYPES, save_lora_to_folder
from .category import CATEGORY


class SaveErasureLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CURE_SaveErasureLoRA",
            display_name="Save Erasure as LoRA",
            category=CATEGORY,
            description="Writes the erasure carried by a MODEL from an Erase Concepts node as a LoRA file in "
                        "ComfyUI's loras folder: load it on the same base model with the stock LoRA loader at "
                        "strength 1 to get the erased model back, without the text encoder.",
            inputs=[
                io.Model.Input("model", tooltip="The model output of an Erase Concepts node (or several in a row)."),
                io.String.Input("filename_prefix", default="concept_erasure",
                                tooltip="File name in the loras folder; a counter is added."),
                io.Combo.Input("dtype", options=tuple(LORA_DTYPES), default="fp16",
                               tooltip="Precision of the stored factors."),
            ],
            outputs=[io.String.Output(display_name="path", tooltip="Where the LoRA was written.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, filename_prefix: str, dtype: str) -> io.NodeOutput:
        path, message = save_lora_to_folder(model, filename_prefix, dtype)
        return io.NodeOutput(path, ui=ui.PreviewText(message))
