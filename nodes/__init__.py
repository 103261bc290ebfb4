"""The nodes users see, one module per node (or per family of nodes): a schema and a call into
:mod:`comfy_glue` (the ComfyUI glue) or :mod:`testbed` (the demo models)."""
from __future__ import annotations

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .concept_preset import ConceptPreset
from .demo_models import MiniatureWorldModel, TinyDemoModel
from .erase_cure import EraseConceptsCURE
from .erase_refusal import EraseConceptsRefusal
from .erase_uce import EraseConceptsUCE
from .erasure_files import ApplyErasureFile, CombineErasureFiles, SaveErasure
from .erasure_spectrum import ErasureSpectrum
from .save_erasure_lora import SaveErasureLoRA
from .unlearn_finetune import UnlearnConceptFinetune


class ConceptErasureExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [EraseConceptsCURE, ConceptPreset, EraseConceptsRefusal, EraseConceptsUCE, UnlearnConceptFinetune, SaveErasure,
                ApplyErasureFile, CombineErasureFiles, ErasureSpectrum, SaveErasureLoRA, TinyDemoModel,
                MiniatureWorldModel]
