"""Test bed: the real ComfyUI source tree, imported in-process on the CPU, and the pack loaded
the way ComfyUI loads a folder from ``custom_nodes/``.

``COMFYUI_DIR`` names the ComfyUI checkout (default: the one ``scripts/setup.sh`` makes).
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMFYUI_DIR = Path(os.environ.get("COMFYUI_DIR", REPO / ".comfyui" / "ComfyUI")).resolve()
PACK_NAME = "comfyui_concept_erasure"

if str(REPO) not in sys.path:
    sys.path.append(str(REPO))   # `import cure_core` standalone; appended so ComfyUI's own `nodes` wins


def _import_comfy() -> None:
    if not (COMFYUI_DIR / "comfy").is_dir():
        raise RuntimeError(f"No ComfyUI found at {COMFYUI_DIR}: run scripts/setup.sh or set COMFYUI_DIR.")
    if str(COMFYUI_DIR) not in sys.path:
        sys.path.insert(0, str(COMFYUI_DIR))
    from comfy.cli_args import args
    args.cpu = True


def load_pack():
    """Import the repository as ComfyUI imports a custom node folder (a package from its ``__init__.py``)."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    _import_comfy()
    spec = importlib.util.spec_from_file_location(PACK_NAME, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pack():
    return load_pack()


@pytest.fixture(scope="session")
def comfy(pack):
    """ComfyUI's modules the integration tests drive, imported once the path is set."""
    import comfy.model_management
    import comfy.utils
    import nodes as comfy_nodes
    return types.SimpleNamespace(mm=comfy.model_management, utils=comfy.utils, nodes=comfy_nodes)


@pytest.fixture(scope="session")
def tiny(pack):
    return sys.modules[f"{PACK_NAME}.nodes.tiny_models"]


@pytest.fixture(scope="session")
def erase(pack):
    return sys.modules[f"{PACK_NAME}.nodes.erase_cure"].erase_concepts
