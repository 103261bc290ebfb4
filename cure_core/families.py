"""Where text enters each supported model family, in ComfyUI / LDM state-dict key names.

Editing the layers that read the text encoder's per-token output is what removes a
concept; the table below says which those are. Keys are matched against the model's
state dict, so the same table serves real checkpoints and tiny test models.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# Which of the text-reading projections to edit (the node's "layers" choice).
LAYER_CHOICES = ("keys and values", "keys only", "values only")
_ATTN2_PATTERNS = {
    "keys and values": r"^diffusion_model\..*\.attn2\.to_[kv]\.weight$",
    "keys only": r"^diffusion_model\..*\.attn2\.to_k\.weight$",
    "values only": r"^diffusion_model\..*\.attn2\.to_v\.weight$",
}


@dataclass(frozen=True)
class PooledPath:
    """A layer whose input *starts* with the text encoder's pooled vector (SDXL's ``label_emb``).

    The pooled vector's width (1280 for CLIP-G) says how many leading input columns read it.
    """
    key: str


@dataclass(frozen=True)
class Family:
    name: str
    config_names: tuple[str, ...]          # ComfyUI ``supported_models`` class names
    encoder: str                           # what the edited layers read, for reports
    layer_patterns: dict[str, str] = field(default_factory=lambda: dict(_ATTN2_PATTERNS))
    pooled: PooledPath | None = None

    def text_layer_keys(self, state_dict_keys, layers: str = "keys and values") -> list[str]:
        """The weight keys that read the per-token text embeddings, in state-dict order."""
        if layers not in self.layer_patterns:
            raise ValueError(f"Unknown layer choice {layers!r}; choose one of {', '.join(self.layer_patterns)}.")
        pattern = re.compile(self.layer_patterns[layers])
        return [k for k in state_dict_keys if pattern.match(k)]


FAMILIES: tuple[Family, ...] = (
    Family("SD1.x", ("SD15", "SD15_instructpix2pix"),
           encoder="CLIP ViT-L/14 token embeddings (last layer, or the one CLIPSetLastLayer picks)"),
    Family("SD2.x", ("SD20", "SD21UnclipL", "SD21UnclipH", "LotusD"),
           encoder="OpenCLIP ViT-H/14 token embeddings (penultimate layer)"),
    Family("SDXL", ("SDXL", "SSD1B", "Segmind_Vega", "KOALA_700M", "KOALA_1B", "SDXL_instructpix2pix"),
           encoder="CLIP-L ⊕ CLIP-G token embeddings (2048 wide)",
           pooled=PooledPath("diffusion_model.label_emb.0.0.weight")),
    Family("SDXL Refiner", ("SDXLRefiner",),
           encoder="CLIP-G token embeddings (1280 wide)",
           pooled=PooledPath("diffusion_model.label_emb.0.0.weight")),
)


def supported_family_names() -> str:
    return ", ".join(f.name for f in FAMILIES)


def family_for_config(config_name: str) -> Family:
    """The family of a ComfyUI model config class name, or a clear error naming the supported ones."""
    for family in FAMILIES:
        if config_name in family.config_names:
            return family
    raise ValueError(f"Concept erasure does not support this model yet (ComfyUI model type {config_name!r}). "
                     f"Supported families: {supported_family_names()}.")
