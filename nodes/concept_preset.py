"""The **Concept Preset** node: curated concept lists wired into Erase Concepts (CURE)'s inputs."""
from __future__ import annotations

from comfy_api.latest import io, ui

from ..cure_core.concepts import CONCEPT_KINDS
from ..cure_core.presets import PRESET_NAMES, PRESETS, resolve_preset
from .category import CATEGORY

# A dropdown value: ComfyUI types a V3 dropdown input "COMBO", and only an output of that type links to it.
KindOutput = io.Custom("COMBO")


class ConceptPreset(io.ComfyNode):
    """A separate node (not a widget on the erase node) so that saved workflows keep their widget order."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CURE_ConceptPreset",
            display_name="Concept Preset",
            category=CATEGORY,
            description="Curated lists of concepts to erase and to keep, with templates and alphas: explicit content, "
                        "violence and gore, artistic styles, copyrighted characters, trademarks. Connect its outputs "
                        "to the matching inputs of Erase Concepts (CURE); add or remove concepts here.",
            inputs=[
                io.Combo.Input("preset", options=PRESET_NAMES, default=PRESET_NAMES[0],
                               tooltip="; ".join(f"{p.name}: {p.summary}" for p in PRESETS.values())),
                io.String.Input("add_forget", multiline=True, default="",
                                placeholder="optional: more concepts to forget, one per line",
                                tooltip="Concepts to forget on top of the preset's, one per line."),
                io.String.Input("add_retain", multiline=True, default="",
                                placeholder="optional: more concepts to keep, one per line",
                                tooltip="Concepts to keep on top of the preset's, one per line."),
                io.String.Input("remove", multiline=True, default="",
                                placeholder="optional: preset concepts to drop, one per line",
                                tooltip="Concepts of the preset (forget or retain list) to leave out, one per line."),
            ],
            outputs=[
                io.String.Output(display_name="forget_concepts", tooltip="To Erase Concepts' forget_concepts."),
                io.String.Output(display_name="retain_concepts", tooltip="To Erase Concepts' retain_concepts."),
                KindOutput.Output(display_name="concept_kind",
                                  tooltip=f"To Erase Concepts' concept_kind (one of: {', '.join(CONCEPT_KINDS)})."),
                io.String.Output(display_name="templates", tooltip="To Erase Concepts' templates."),
                io.Float.Output(display_name="alpha_forget", tooltip="To Erase Concepts' alpha_forget."),
                io.Float.Output(display_name="alpha_retain", tooltip="To Erase Concepts' alpha_retain."),
            ],
        )

    @classmethod
    def execute(cls, preset: str, add_forget: str, add_retain: str, remove: str) -> io.NodeOutput:
        choice = resolve_preset(preset, add_forget, add_retain, remove)
        text = (f"Forget ({len(choice.forget_concepts.splitlines())}, alpha {choice.alpha_forget:g}): "
                f"{choice.forget_concepts.replace(chr(10), ', ')}\n"
                f"Retain ({len(choice.retain_concepts.splitlines())}, alpha {choice.alpha_retain:g}): "
                f"{choice.retain_concepts.replace(chr(10), ', ')}\n"
                f"Templates: {choice.templates.replace(chr(10), ' | ')}")
        return io.NodeOutput(choice.forget_concepts, choice.retain_concepts, choice.concept_kind, choice.templates,
                             choice.alpha_forget, choice.alpha_retain, ui=ui.PreviewText(text))
