"""The **Save Erasure**, **Apply Erasure File** and **Combine Erasure Files** nodes: their schemas and calls
into :mod:`comfy_glue.erasure_files`."""
from __future__ import annotations

from comfy_api.latest import io, ui

from ..comfy_glue.erasure_files import (BASE_CHECKS, EXACT_WEIGHTS, apply_erasure_file, combine_erasure_files,
                                        erasure_file_names, load_named, save_to_folder)
from .category import CATEGORY


def base_check_input() -> io.Combo.Input:
    return io.Combo.Input("base_check", options=BASE_CHECKS, default=EXACT_WEIGHTS, optional=True,
                          tooltip="How the model is checked against the file. 'same weights (exact)' (default): the "
                                  "weights' hash, so only the checkpoint the file was saved on, loaded the same way. "
                                  "'same checkpoint, any precision': the same checkpoint in another format or "
                                  "precision (scaled fp8, GGUF, fp8 weight_dtype, fp16) passes; the weights are "
                                  "compared by a fingerprint and must agree within quantization's error.")


class SaveErasure(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CURE_SaveErasure",
            display_name="Save Erasure",
            category=CATEGORY,
            description="Writes the erasure carried by a MODEL (from Erase Concepts, Apply Erasure File or Combine "
                        "Erasure Files) to a small file in models/erasures: the low-rank factors of every edited "
                        "layer, the recipe, a hash of the base weights, and the concepts' encoder rows so that "
                        "saved erasures can be combined. Apply it later with Apply Erasure File, without the CLIP.",
            inputs=[
                io.Model.Input("model", tooltip="The model output of an erase node (several erase nodes in a row are "
                                                "saved together)."),
                io.String.Input("filename_prefix", default="erasure",
                                tooltip="File name in models/erasures; a counter is added."),
            ],
            outputs=[io.String.Output(display_name="path", tooltip="Where the erasure file was written.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, filename_prefix: str) -> io.NodeOutput:
        path, message = save_to_folder(model, filename_prefix)
        return io.NodeOutput(path, ui=ui.PreviewText(message))


class ApplyErasureFile(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CURE_ApplyErasureFile",
            display_name="Apply Erasure File",
            category=CATEGORY,
            description="Applies an erasure saved by Save Erasure to the same base model, without the text encoder. "
                        "The file's model family, layer shapes and base weights are checked first (base_check: the "
                        "exact weights, or the same checkpoint at any precision). Returns a patched copy; the input "
                        "model is unchanged.",
            inputs=[
                io.Model.Input("model", tooltip="The base model the erasure was computed for."),
                io.Combo.Input("erasure", options=erasure_file_names(),
                               tooltip="An erasure file in models/erasures (written by Save Erasure)."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Scales the saved erasure: 1 reproduces the model the file was saved from."),
                base_check_input(),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="A patched copy of the model with the erasure."),
                io.String.Output(display_name="report", tooltip="What the file holds."),
            ],
        )

    @classmethod
    def execute(cls, model, erasure: str, strength: float, base_check: str = EXACT_WEIGHTS) -> io.NodeOutput:
        patched, report = apply_erasure_file(model, load_named(erasure), strength, erasure, base_check)
        return io.NodeOutput(patched, report, ui=ui.PreviewText(report))


class CombineErasureFiles(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        files = erasure_file_names()
        return io.Schema(
            node_id="CURE_CombineErasureFiles",
            display_name="Combine Erasure Files",
            category=CATEGORY,
            description="Builds ONE CURE erasure from the union of the concepts of two saved erasures (their "
                        "stored encoder rows), exactly what erasing all the concepts in one Erase Concepts call "
                        "gives; chaining two erase nodes instead accumulates cross terms. Needs the base model "
                        "(the layer updates are W times the new projector). Save the result with Save Erasure.",
            inputs=[
                io.Model.Input("model", tooltip="The base model both erasures were computed for."),
                io.Combo.Input("erasure_a", options=files, tooltip="A CURE erasure file in models/erasures."),
                io.Combo.Input("erasure_b", options=files, tooltip="Another CURE erasure file, with the same alphas, "
                                                                 "token selection, layers and strength."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Scales the combined erasure: 1 = the strength the files were saved at."),
                base_check_input(),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="A patched copy of the model with the combined erasure."),
                io.String.Output(display_name="report", tooltip="What was combined, and the erase report."),
            ],
        )

    @classmethod
    def execute(cls, model, erasure_a: str, erasure_b: str, strength: float,
                base_check: str = EXACT_WEIGHTS) -> io.NodeOutput:
        named = [(erasure_a, load_named(erasure_a)), (erasure_b, load_named(erasure_b))]
        patched, report = combine_erasure_files(model, named, strength, base_check)
        return io.NodeOutput(patched, report, ui=ui.PreviewText(report))
