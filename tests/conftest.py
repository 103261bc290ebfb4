"""Test bed: the real ComfyUI source tree imported in-process on the CPU, and the pack loaded the
way ComfyUI loads a folder from ``custom_nodes/`` (see ``scripts/comfy_env.py``)."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# `import cure_core` / `scripts.*` standalone; appended so that ComfyUI's own top-level `nodes` wins.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from scripts.comfy_env import PACK_NAME, load_pack, pack_module  # noqa: E402,F401


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
    return pack_module("testbed.tiny_models")


@pytest.fixture(scope="session")
def erase(pack):
    return pack_module("comfy_glue.cure").erase_concepts


@pytest.fixture(scope="session")
def built(tiny):
    """Tiny ``(MODEL, CLIP)`` per family, built once: tests that use these never modify them."""
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = tiny.tiny_model(family), tiny.tiny_clip(family)
        return cache[family]
    return get
