"""ComfyUI wrappers of :mod:`cure_core` (the only part of the pack that imports ComfyUI)."""
from __future__ import annotations

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .demo import MiniatureWorldModel, TinyDemoModel
from .erase_cure import EraseConceptsCURE
from .erase_refusal import EraseConceptsRefusal
from .erase_uce import EraseConceptsUCE
from .erasure_files import ApplyErasureFile, CombineErasureFiles, SaveErasure
from .export import SaveErasureLoRA
from .presets import ConceptPreset
from .spectrum import ErasureSpectrum


class ConceptErasureExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [EraseConceptsCURE, ConceptPreset, EraseConceptsRefusal, EraseConceptsUCE, SaveErasure,
                ApplyErasureFile, CombineErasureFiles, ErasureSpectrum, SaveErasureLoRA, TinyDemoModel,
                MiniatureWorldModel]
