"""End to end through ComfyUI's real server: the pack loads from custom_nodes/, its nodes are
described in /object_info, and every shipped example workflow is validated by the server and
runs to an image with its loaders swapped for the tiny demo model of the same family."""
import json

import pytest

from conftest import REPO
from scripts.comfy_server import ComfyServer, ui_to_api

WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
# Workflow -> (tiny demo family that stands in for its loaders, image size for the run).
RUNS = {"erase_style_sd15.json": ("SD1.x", 64), "erase_artist_sd21.json": ("SD2.x", 64),
        "erase_celebrity_sdxl.json": ("SDXL", 64), "erase_explicit_sd35.json": ("SD3", 64),
        "erase_character_flux.json": ("Flux", 64), "erase_style_chroma.json": ("Chroma", 64),
        "erase_violence_wan21.json": ("Wan 2.1", 64), "erase_style_pixart.json": ("PixArt", 512),
        "refusal_nudity_wan21.json": ("Wan 2.1", 64), "refusal_nudity_flux.json": ("Flux", 64),
        "erase_logo_cosmos_predict2.json": ("Cosmos Predict2", 64), "erase_style_lumina2.json": ("Lumina 2", 64),
        "erase_logo_qwen_image.json": ("Qwen-Image", 64), "erase_object_hidream.json": ("HiDream", 64),
        "erase_style_hunyuan_dit.json": ("Hunyuan-DiT", 64), "unlearn_nudity_wan21.json": ("Wan 2.1", 64)}
# Run to their own kind of output (checked by a test of their own).
GRID_RUNS = {"before_after_grid_sd15.json": ("SD1.x", 64)}
# Validated by the server only: the pack has no tiny video VAE of their kind to run them with.
VALIDATE_ONLY = {"erase_smoking_ltxv.json", "erase_object_mochi.json", "erase_celebrity_hunyuanvideo.json",
                 "erase_character_stable_cascade.json", "erase_object_cosmos1.json"}
# Run as shipped: their loader is the pack's trained miniature model.
MINIATURE_RUNS = {"miniature_world_erase_red.json", "unlearn_red_miniature.json"}
# Which demo-model output (MODEL 0, CLIP 1, VAE 2) stands in for each loader output.
LOADER_OUTPUTS = {"CheckpointLoaderSimple": (0, 1, 2), "UNETLoader": (0,), "DualCLIPLoader": (1,),
                  "CLIPLoader": (1,), "TripleCLIPLoader": (1,), "QuadrupleCLIPLoader": (1,), "VAELoader": (2,)}
MODEL_FOLDERS = ("checkpoints", "diffusion_models", "text_encoders", "vae")


def model_file_names(workflow: dict) -> set[str]:
    return {value for node in workflow["nodes"] for value in node.get("widgets_values", [])
            if isinstance(value, str) and value.endswith((".safetensors", ".sft", ".gguf", ".ckpt"))}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfyui")
    # Empty stand-ins for the checkpoints the example workflows name, so that the server's own
    # validation (which checks that a chosen file exists) can run on them.
    for name in set().union(*(model_file_names(json.loads(p.read_text())) for p in WORKFLOWS)):
        for folder in MODEL_FOLDERS:
            (base / "models" / folder).mkdir(parents=True, exist_ok=True)
            (base / "models" / folder / name).touch()
    with ComfyServer(base) as running:
        yield running


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def tiny_version(workflow: dict, object_info: dict, family: str, size: int = 64) -> dict:
    """The workflow as users share it, with its loaders replaced by the tiny demo model of the same
    family (outputs rewired: MODEL, CLIP, VAE) and a small, quick latent."""
    prompt = ui_to_api(workflow, object_info)
    loaders = {node_id: node["class_type"] for node_id, node in prompt.items()
               if node["class_type"] in LOADER_OUTPUTS}
    for node_id in loaders:
        del prompt[node_id]
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and value[0] in loaders:
                node["inputs"][name] = ["tiny", LOADER_OUTPUTS[loaders[value[0]]][value[1]]]
        if node["class_type"] in ("EmptyLatentImage", "EmptySD3LatentImage", "EmptyHunyuanLatentVideo"):
            node["inputs"].update(width=size, height=size)
            if "length" in node["inputs"]:
                node["inputs"]["length"] = 1
        elif node["class_type"] == "KSampler":
            node["inputs"]["steps"] = 2
        elif node["class_type"] == "CURE_UnlearnConceptFinetune":      # a few iterations on a small latent
            node["inputs"].update(iterations=3, latent_size=8, latent_frames=1, rank=4)
    prompt["tiny"] = {"class_type": "CURE_TinyDemoModel", "inputs": {"family": family, "seed": 0}}
    return prompt


def test_every_example_workflow_is_run_or_validated():
    assert {p.name for p in WORKFLOWS} == set(RUNS) | set(GRID_RUNS) | VALIDATE_ONLY | MINIATURE_RUNS


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
    # Added after workflows were shared: optional, so API prompts and saved workflows without it still run.
    optional = node["input"]["optional"]
    assert list(optional) == ["combination", "robust_contexts"] and all(spec[1]["tooltip"] for spec in optional.values())
    assert optional["robust_contexts"][1]["default"] == 0 and optional["robust_contexts"][1]["min"] == 0
    assert inputs["strength"][1]["min"] == 0.0 and inputs["strength"][1]["max"] == 1.0
    assert "CURE_TinyDemoModel" in object_info
    names = {"CURE_EraseConceptsRefusal": "Erase Concepts (Refusal Vector)", "CURE_ConceptPreset": "Concept Preset",
             "CURE_SaveErasure": "Save Erasure", "CURE_ApplyErasureFile": "Apply Erasure File",
             "CURE_CombineErasureFiles": "Combine Erasure Files", "CURE_ErasureSpectrum": "Erasure Spectrum",
             "CURE_SaveErasureLoRA": "Save Erasure as LoRA", "CURE_EraseConceptsUCE": "Erase Concepts (UCE baseline)"}
    for node_id, display_name in names.items():
        info = object_info[node_id]
        assert info["display_name"] == display_name and info["category"] == "concept erasure", node_id
        assert info["description"] and all(spec[1].get("tooltip") for spec in info["input"]["required"].values())
        assert all(info["output_tooltips"]), node_id
    assert object_info["CURE_ErasureSpectrum"]["output"] == ["IMAGE"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_example_workflow_is_validated_by_the_server(path, server, object_info):
    prompt = ui_to_api(json.loads(path.read_text()), object_info)
    assert any(node["class_type"].startswith(("CURE_EraseConcepts", "CURE_Unlearn")) for node in prompt.values())
    prompt_id = server.post_prompt(prompt)     # raises with ComfyUI's message if validation fails
    server.wait(prompt_id, raise_on_error=False)   # it then stops at loading the empty stand-in file


@pytest.mark.parametrize("name", sorted(RUNS))
def test_example_workflow_runs_to_an_image(name, server, object_info):
    from PIL import Image
    family, size = RUNS[name]
    workflow = json.loads((REPO / "example_workflows" / name).read_text())
    history = server.run(tiny_version(workflow, object_info, family, size))
    outputs = history["outputs"]
    saved = next(o["images"][0] for o in outputs.values() if "images" in o and "loss" not in o["images"][0]["filename"])
    image = Image.open(server.base_dir / "output" / saved["subfolder"] / saved["filename"])
    assert image.size == (size, size)
    reports = [o["text"][0] for o in outputs.values() if "text" in o]
    method = {"refusal": "Low-rank refusal vector", "unlearn": "T2VUnlearning (fine-tune)"}.get(name.split("_")[0],
                                                                                              "CURE Spectral Eraser")
    assert reports and reports[0].startswith(f"{method} on {family.split()[0]}")


def test_the_miniature_workflow_erases_red_as_shipped(server, object_info):
    """The shipped workflow, unchanged: 4 seeds of "a striped red circle on a white background" before
    and after erasing red; the detector reads the saved pictures."""
    import numpy as np
    from testbed.miniworld.detector import detect_batch
    workflow = json.loads((REPO / "example_workflows" / "miniature_world_erase_red.json").read_text())
    outputs = server.run(ui_to_api(workflow, object_info))["outputs"]
    before = [np.asarray(i, dtype=np.float32) / 255 for i in saved_images(server, outputs, "miniature_before")]
    after = [np.asarray(i, dtype=np.float32) / 255 for i in saved_images(server, outputs, "miniature_after_erasing_red")]
    assert len(before) == len(after) == 4 and before[0].shape == (32, 32, 3)
    red_before = sum(f["colour"] == "red" for f in detect_batch(np.stack(before)))
    assert red_before >= 3, red_before          # the model draws what it is prompted with
    assert sum(f["shape"] == "circle" for f in detect_batch(np.stack(after))) >= 3   # what was not erased stays
    assert any(np.abs(b - a).mean() > 0.01 for b, a in zip(before, after))          # the erased model drew otherwise
    red_after = sum(f["colour"] == "red" for f in detect_batch(np.stack(after)))
    assert red_after <= red_before / 2, (red_before, red_after)                      # ... and red is gone


def test_the_unlearn_workflow_unlearns_red_as_shipped(server, object_info):
    """The shipped fine-tuning workflow, unchanged (200 iterations on the CPU): red before and after, the loss curve."""
    import numpy as np
    from testbed.miniworld.detector import detect_batch
    workflow = json.loads((REPO / "example_workflows" / "unlearn_red_miniature.json").read_text())
    outputs = server.run(ui_to_api(workflow, object_info))["outputs"]
    before = np.stack([np.asarray(i, dtype=np.float32) / 255 for i in saved_images(server, outputs, "unlearn_before")])
    after = np.stack([np.asarray(i, dtype=np.float32) / 255 for i in saved_images(server, outputs, "unlearn_after_red")])
    assert len(before) == len(after) == 4
    red_before = sum(f["colour"] == "red" for f in detect_batch(before))
    red_after = sum(f["colour"] == "red" for f in detect_batch(after))
    assert red_before >= 3 and red_after <= red_before / 2, (red_before, red_after)
    assert len(saved_images(server, outputs, "unlearn_loss")) == 1
    reports = [o["text"][0] for o in outputs.values() if "text" in o]
    assert reports and reports[0].startswith("T2VUnlearning (fine-tune) on SD1.x: unlearned red")


def test_a_bad_input_is_reported_by_the_server(server, object_info):
    workflow = json.loads((REPO / "example_workflows" / "erase_style_sd15.json").read_text())
    prompt = tiny_version(workflow, object_info, "SD1.x")
    eraser = next(n for n in prompt.values() if n["class_type"] == "CURE_EraseConcepts")
    eraser["inputs"]["forget_concepts"] = "   "
    with pytest.raises(RuntimeError, match="No concept to forget"):
        server.run(prompt)
    eraser["inputs"].update(forget_concepts="Van Gogh", strength=3.0)
    with pytest.raises(RuntimeError, match="strength"):
        server.post_prompt(prompt)                 # rejected by ComfyUI's own range validation


def test_the_erasure_saved_as_lora_loads_with_the_stock_loader(server, object_info):
    """Save node → a file in the loras folder → ComfyUI's own LoraLoaderModelOnly applies it."""
    workflow = json.loads((REPO / "example_workflows" / "erase_style_sd15.json").read_text())
    prompt = tiny_version(workflow, object_info, "SD1.x")
    eraser_id = next(i for i, n in prompt.items() if n["class_type"] == "CURE_EraseConcepts")
    prompt["save"] = {"class_type": "CURE_SaveErasureLoRA",
                      "inputs": {"model": [eraser_id, 0], "filename_prefix": "e2e_erasure", "dtype": "fp16"}}
    history = server.run(prompt)
    assert "Saved 14 erased layers" in history["outputs"]["save"]["text"][0]
    saved = sorted((server.base_dir / "models" / "loras").glob("e2e_erasure_*.safetensors"))
    assert saved, "no LoRA file written"
    assert saved[-1].name in server.get("/object_info/LoraLoaderModelOnly")["LoraLoaderModelOnly"]["input"][
        "required"]["lora_name"][0]
    again = tiny_version(workflow, object_info, "SD1.x")
    eraser_id = next(i for i, n in again.items() if n["class_type"] == "CURE_EraseConcepts")
    sampler = next(n for n in again.values() if n["class_type"] == "KSampler")
    again["lora"] = {"class_type": "LoraLoaderModelOnly",
                     "inputs": {"model": ["tiny", 0], "lora_name": saved[-1].name, "strength_model": 1.0}}
    sampler["inputs"]["model"] = ["lora", 0]
    del again[eraser_id]
    outputs = server.run(again)["outputs"]
    assert any("images" in o for o in outputs.values())


def saved_images(server, outputs: dict, prefix: str):
    from PIL import Image
    found = [image for o in outputs.values() for image in o.get("images", []) if image["filename"].startswith(prefix)]
    return [Image.open(server.base_dir / "output" / i["subfolder"] / i["filename"]).convert("RGB") for i in found]


def test_the_before_after_grid_workflow_runs(server, object_info):
    """Four seeds through the original and the erased model, stitched into one grid, and the spectrum."""
    import numpy as np
    family, size = GRID_RUNS["before_after_grid_sd15.json"]
    workflow = json.loads((REPO / "example_workflows" / "before_after_grid_sd15.json").read_text())
    prompt = tiny_version(workflow, object_info, family, size)
    grid_node = next(n for n in prompt.values() if n["class_type"] == "ImageGrid")
    spacing = next(n for n in prompt.values() if n["class_type"] == "ImageStitch")["inputs"]["spacing_width"]
    grid_node["inputs"].update(cell_width=size, cell_height=2 * size + spacing)
    outputs = server.run(prompt)["outputs"]
    [grid] = saved_images(server, outputs, "before_after_grid")
    padding = grid_node["inputs"]["padding"]
    assert grid.size == (4 * size + 3 * padding, 2 * size + spacing)
    pixels = np.asarray(grid, dtype=np.float32)
    cells = [pixels[:, c * (size + padding):c * (size + padding) + size] for c in range(4)]
    for cell in cells:                                    # after differs from before, for every seed
        assert np.abs(cell[:size] - cell[size + spacing:]).mean() > 1.0
    assert np.abs(cells[0][:size] - cells[1][:size]).mean() > 1.0      # the four seeds differ
    [chart] = saved_images(server, outputs, "erasure_spectrum")
    assert chart.size[0] == 960
    report = next(o["text"][0] for o in outputs.values() if "text" in o and o["text"][0].startswith("CURE"))
    assert "Van Gogh (" in report and "Kelly McKernan (" in report and "Forget (alpha 2)" in report


def test_erasure_files_are_saved_applied_and_combined_by_the_server(server, object_info):
    """Save Erasure writes into models/erasures; Apply Erasure File and Combine Erasure Files list and read them."""
    workflow = json.loads((REPO / "example_workflows" / "erase_style_sd15.json").read_text())
    saved = []
    for prefix, forget in (("e2e_a", "Van Gogh"), ("e2e_b", "Starry Night")):
        prompt = tiny_version(workflow, object_info, "SD1.x")
        eraser_id = next(i for i, n in prompt.items() if n["class_type"] == "CURE_EraseConcepts")
        prompt[eraser_id]["inputs"]["forget_concepts"] = forget
        prompt["save"] = {"class_type": "CURE_SaveErasure", "inputs": {"model": [eraser_id, 0], "filename_prefix": prefix}}
        history = server.run(prompt)
        assert "Saved 1 erasure(s) of 14 layers" in history["outputs"]["save"]["text"][0]
        saved.append(sorted((server.base_dir / "models" / "erasures").glob(f"{prefix}_*.safetensors"))[-1].name)
    listed = server.get("/object_info/CURE_ApplyErasureFile")["CURE_ApplyErasureFile"]["input"]["required"]["erasure"]
    assert set(saved) <= set(listed[1]["options"] if isinstance(listed[0], str) else listed[0])
    prompt = tiny_version(workflow, object_info, "SD1.x")
    eraser_id = next(i for i, n in prompt.items() if n["class_type"] == "CURE_EraseConcepts")
    del prompt[eraser_id]
    prompt["apply"] = {"class_type": "CURE_ApplyErasureFile",
                       "inputs": {"model": ["tiny", 0], "erasure": saved[0], "strength": 1.0}}
    next(n for n in prompt.values() if n["class_type"] == "KSampler")["inputs"]["model"] = ["apply", 0]
    prompt["combine"] = {"class_type": "CURE_CombineErasureFiles",
                         "inputs": {"model": ["tiny", 0], "erasure_a": saved[0], "erasure_b": saved[1], "strength": 1.0}}
    prompt["save"] = {"class_type": "CURE_SaveErasure", "inputs": {"model": ["combine", 0], "filename_prefix": "e2e_ab"}}
    outputs = server.run(prompt)["outputs"]
    assert "base weights verified" in outputs["apply"]["text"][0]
    assert "Forget (alpha 2): Van Gogh (" in outputs["combine"]["text"][0] and "Starry Night (" in outputs["combine"]["text"][0]
    assert "Saved 1 erasure(s)" in outputs["save"]["text"][0]
    assert any("images" in o for o in outputs.values())
