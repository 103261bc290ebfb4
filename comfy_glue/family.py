"""Which of the pack's model families a ComfyUI MODEL belongs to."""
from __future__ import annotations

from ..cure_core.families import Family, family_for_config


def detect_family(model) -> Family:
    """The family of a ModelPatcher, from its model config's class (ComfyUI's model type); an unsupported
    type raises an error that names the supported families."""
    config = getattr(getattr(model, "model", None), "model_config", None)
    if config is None:
        raise ValueError("The MODEL input is not a ComfyUI diffusion model (it has no model config).")
    return family_for_config(type(config).__name__)
