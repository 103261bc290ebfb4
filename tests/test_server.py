"""End to end through ComfyUI's real server: the pack loads from custom_nodes/, its nodes are
described in /object_info, and the shipped example workflow runs to an image."""
import json
from pathlib import Path

import pytest

from conftest import REPO
from scripts.comfy_server import ComfyServer, ui_to_api

WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ComfyServer(tmp_path_factory.mktemp("comfyui")) as running:
        yield running


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def tiny_version(workflow: dict, object_info: dict) -> dict:
    """The workflow as users share it, with the checkpoint loader swapped for the tiny demo model
    (same outputs: MODEL, CLIP, VAE) and a small, quick latent."""
    prompt = ui_to_api(workflow, object_info)
    for node in prompt.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node.update(class_type="CURE_TinyDemoModel", inputs={"family": "SD1.x", "seed": 0})
        elif node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=64, height=64)
        elif node["class_type"] == "KSampler":
            node["inputs"]["steps"] = 2
    return prompt


def test_nodes_are_described_with_inputs_and_tooltips(object_info):
    node = object_info["CURE_EraseConcepts"]
    assert node["display_name"] == "Erase Concepts (CURE)"
    assert node["output"] == ["MODEL", "STRING"]
    inputs = node["input"]["required"]
    assert list(inputs)[:4] == ["model", "clip", "forget_concepts", "retain_concepts"]
    for name in ("concept_kind", "templates", "alpha_forget", "alpha_retain", "strength", "layers",
                 "token_selection", "erase_pooled"):
        assert name in inputs
    for name, spec in inputs.items():
        assert spec[1].get("tooltip"), f"{name} has no tooltip"
    assert inputs["strength"][1]["min"] == 0.0 and inputs["strength"][1]["max"] == 1.0
    assert "CURE_TinyDemoModel" in object_info


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_example_workflow_converts_with_known_nodes_only(path, object_info):
    prompt = ui_to_api(json.loads(path.read_text()), object_info)
    assert any(node["class_type"] == "CURE_EraseConcepts" for node in prompt.values())


def test_example_workflow_runs_to_an_image(server, object_info):
    from PIL import Image
    workflow = json.loads((REPO / "example_workflows" / "erase_style_sd15.json").read_text())
    history = server.run(tiny_version(workflow, object_info))
    outputs = history["outputs"]
    saved = next(o["images"][0] for o in outputs.values() if "images" in o)
    image = Image.open(server.base_dir / "output" / saved["subfolder"] / saved["filename"])
    assert image.size == (64, 64)
    reports = [o["text"][0] for o in outputs.values() if "text" in o]
    assert reports and reports[0].startswith("CURE Spectral Eraser on SD1.x")


def test_a_bad_input_is_reported_by_the_server(server, object_info):
    workflow = json.loads((REPO / "example_workflows" / "erase_style_sd15.json").read_text())
    prompt = tiny_version(workflow, object_info)
    eraser = next(n for n in prompt.values() if n["class_type"] == "CURE_EraseConcepts")
    eraser["inputs"]["forget_concepts"] = "   "
    with pytest.raises(RuntimeError, match="No concept to forget"):
        server.run(prompt)
    eraser["inputs"].update(forget_concepts="Van Gogh", strength=3.0)
    with pytest.raises(RuntimeError, match="strength"):
        server.post_prompt(prompt)                 # rejected by ComfyUI's own range validation
