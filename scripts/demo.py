"""The main job: a headless ComfyUI erases a concept and writes before/after images and the report.

By default it loads the pack's miniature-world model (``models/miniature_world.safetensors``, a
small SD1.x-style model trained on procedural scenes by ``scripts/train_miniature.py``), erases
"red" while keeping "orange", draws the same prompts and seeds before and after, and writes the
grid plus what the world's detector finds in every picture. ``--model tiny`` builds a random-weight
tiny model of ``--family`` instead (noise pictures: it shows only *that* the erasure changes what
the sampler makes), and ``--checkpoint`` takes a real all-in-one checkpoint of ``--family``.

The miniature run's ``grid.png`` and ``spectrum.png`` are the pictures of the README and of the node-help
pages (``web/docs/images/miniature_erase_red.png``, ``spectrum_erase_red.png``): copy them there to renew them.

    .venv/bin/python scripts/demo.py --out demo_output                      # the miniature model
    .venv/bin/python scripts/demo.py --out demo_output --model tiny --family SDXL
    .venv/bin/python scripts/demo.py --out demo_output --checkpoint model.safetensors --family SDXL
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:      # appended: ComfyUI's own top-level `nodes` must win over the pack's folder
    sys.path.append(_REPO)
from cure_core.concepts import TOKEN_SELECTIONS  # noqa: E402  (the node's default rows)
from scripts.comfy_server import ComfyServer  # noqa: E402


def latent_node(args: argparse.Namespace) -> dict:
    """An empty latent of the family's kind: 4-channel SD, 16-channel SD3/Flux/..., or one video frame."""
    size = {"width": args.size, "height": args.size, "batch_size": 1}
    if args.family in ("Wan 2.1", "Cosmos Predict2"):
        return {"class_type": "EmptyHunyuanLatentVideo", "inputs": {**size, "length": 1}}
    if args.family in ("SD3", "Flux", "Chroma", "Lumina 2", "Qwen-Image", "HiDream"):
        return {"class_type": "EmptySD3LatentImage", "inputs": size}
    return {"class_type": "EmptyLatentImage", "inputs": size}


def workflow(args: argparse.Namespace) -> dict:
    """Two samplers on the same seed: one on the loaded model, one on the erased clone."""
    if args.checkpoint:
        loader = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": Path(args.checkpoint).name}}
    else:
        loader = {"class_type": "CURE_TinyDemoModel", "inputs": {"family": args.family, "seed": 0}}

    def sampler(model_link):
        return {"class_type": "KSampler", "inputs": {
            "model": model_link, "seed": args.seed, "steps": args.steps, "cfg": 7.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0],
            "denoise": 1.0}}

    return {
        "1": loader,
        "2": {"class_type": "CURE_EraseConcepts", "inputs": {
            "model": ["1", 0], "clip": ["1", 1], "forget_concepts": args.forget, "retain_concepts": args.retain,
            "concept_kind": args.kind, "templates": "", "alpha_forget": 0.0, "alpha_retain": 0.0, "strength": 1.0,
            "layers": "all text-reading layers", "token_selection": TOKEN_SELECTIONS[0], "erase_pooled": False}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": args.prompt}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "5": latent_node(args),
        "6": sampler(["1", 0]),
        "7": sampler(["2", 0]),
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "before"}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "after"}},
    }


# The labelled pictures: a title band over the columns, a caption band with the prompt over each row.
TITLE_BAND, CAPTION_BAND, GAP = 30, 22, 8


def compare(before: Path, after: Path, target: Path, prompt: str) -> float:
    """Before | after | |after - before| (amplified) side by side under their titles and the prompt;
    returns the mean pixel change (0-255)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont
    left, right = Image.open(before).convert("RGB"), Image.open(after).convert("RGB")
    change = np.abs(np.asarray(right, dtype=np.float32) - np.asarray(left, dtype=np.float32))
    amplified = Image.fromarray(np.clip(change * (255.0 / max(float(change.max()), 1.0)), 0, 255).astype(np.uint8))
    top = TITLE_BAND + CAPTION_BAND
    canvas = Image.new("RGB", (3 * left.width + 16, left.height + top), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    draw.text((4, 4), f'"{prompt}"', fill=(60, 60, 60), font=font)
    for i, (panel, title) in enumerate(zip((left, right, amplified), ("before", "after", "change, amplified"))):
        canvas.paste(panel, (i * (left.width + 8), top))
        draw.text((i * (left.width + 8) + left.width / 2, top - 12), title, fill=(20, 20, 20), font=font, anchor="mm")
    canvas.save(target)
    return float(change.mean())


MINIATURE_PROMPTS = ("a solid red circle on a white background", "a striped red square on a gray background",
                     "a checkered orange star on a black background", "a solid blue triangle on a sand background")


def miniature_workflow(args: argparse.Namespace) -> dict:
    """Each prompt, ``--seeds`` pictures in one batch, on the loaded and on the erased model."""
    graph = {
        "1": {"class_type": "CURE_MiniatureWorldModel", "inputs": {}},
        "2": {"class_type": "CURE_EraseConcepts", "inputs": {
            "model": ["1", 0], "clip": ["1", 1], "forget_concepts": args.forget, "retain_concepts": args.retain,
            "concept_kind": args.kind, "templates": "{}\na {} shape\na drawing of a {} shape", "alpha_forget": 0.0,
            "alpha_retain": 0.0, "strength": 1.0, "layers": "all text-reading layers",
            "token_selection": TOKEN_SELECTIONS[0], "erase_pooled": False}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": args.seeds}},
        "5": {"class_type": "CURE_ErasureSpectrum", "inputs": {"model": ["2", 0], "width": 960}},
        "spectrum": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "spectrum"}},
    }
    for i, prompt in enumerate(MINIATURE_PROMPTS):
        graph[f"p{i}"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": prompt}}
        for name, model in (("before", ["1", 0]), ("after", ["2", 0])):
            graph[f"{name}{i}_sample"] = {"class_type": "KSampler", "inputs": {
                "model": model, "seed": args.seed, "steps": 20, "cfg": 5.0, "sampler_name": "euler",
                "scheduler": "normal", "positive": [f"p{i}", 0], "negative": ["3", 0], "latent_image": ["4", 0],
                "denoise": 1.0}}
            graph[f"{name}{i}_decode"] = {"class_type": "VAEDecode",
                                          "inputs": {"samples": [f"{name}{i}_sample", 0], "vae": ["1", 2]}}
            graph[f"{name}{i}"] = {"class_type": "SaveImage", "inputs": {"images": [f"{name}{i}_decode", 0],
                                                                          "filename_prefix": f"{name}{i}"}}
    return graph


def labelled_grid(rows: list[tuple[str, list, list]], titles: tuple[str, str], scale: int = 4):
    """One row per prompt, its before pictures left and after pictures right (same seeds, same order),
    the prompt written above the row and the two column titles above everything, so that the picture
    explains itself when shared. ``rows`` are ``(prompt, before pictures, after pictures)`` of HxWx3 uint8."""
    from PIL import Image, ImageDraw, ImageFont
    per_side = len(rows[0][1])
    tile = rows[0][1][0].shape[1] * scale
    half = per_side * tile
    width = 2 * half + 3 * GAP
    height = TITLE_BAND + len(rows) * (CAPTION_BAND + tile + GAP)
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    title_font, caption_font = ImageFont.load_default(size=18), ImageFont.load_default(size=14)
    for column, title in enumerate(titles):
        left = GAP + column * (half + GAP)
        draw.text((left + half / 2, TITLE_BAND / 2), title, fill=(20, 20, 20), font=title_font, anchor="mm")
    draw.line((GAP + half + GAP / 2, TITLE_BAND, GAP + half + GAP / 2, height), fill=(150, 150, 150), width=2)
    for i, (prompt, before, after) in enumerate(rows):
        top = TITLE_BAND + i * (CAPTION_BAND + tile + GAP)
        draw.text((GAP, top + 3), f'"{prompt}"', fill=(60, 60, 60), font=caption_font)
        for column, pictures in enumerate((before, after)):
            for j, picture in enumerate(pictures):
                x = GAP + column * (half + GAP) + j * tile
                grid.paste(Image.fromarray(picture).resize((tile, tile), Image.NEAREST), (x, top + CAPTION_BAND))
    return grid


def run_miniature(args: argparse.Namespace) -> None:
    """Erase on the miniature model; write grid.png (:func:`labelled_grid`), spectrum.png (the Erasure
    Spectrum node's picture), the detector's findings per picture and the share of pictures that show
    each erased concept."""
    import numpy as np
    from PIL import Image
    from testbed.miniworld.detector import detect
    from testbed.miniworld.scenes import concept_attribute

    graph = miniature_workflow(args)
    with tempfile.TemporaryDirectory() as base:
        started = time.time()
        with ComfyServer(Path(base)) as server:
            print(f"ComfyUI is up at {server.url} ({time.time() - started:.1f} s); running the workflow")
            outputs = server.run(graph)["outputs"]
        report = outputs["2"]["text"][0]
        pictures = {name: [np.asarray(Image.open(Path(base) / "output" / image["subfolder"] / image["filename"])
                                      .convert("RGB")) for image in outputs[name]["images"]]
                    for name in outputs if name.startswith(("before", "after"))}
        spectrum = outputs["spectrum"]["images"][0]
        shutil.copy(Path(base) / "output" / spectrum["subfolder"] / spectrum["filename"], args.out / "spectrum.png")
    findings = []
    concepts = [c for c in args.forget.splitlines() if c.strip()]
    shown = {(name, c): 0 for name in ("before", "after") for c in concepts}
    for i, prompt in enumerate(MINIATURE_PROMPTS):
        for name in ("before", "after"):
            for j, picture in enumerate(pictures[f"{name}{i}"]):
                found = detect(picture / 255.0)
                findings.append({"prompt": prompt, "model": name, "seed_index": j, **found})
                for c in concepts:
                    shown[(name, c)] += found[concept_attribute(c)] == c
    kept = ", ".join(c for c in args.retain.splitlines() if c.strip()) or "nothing"
    titles = ("before: the loaded model", f"after: {', '.join(concepts)} erased ({kept} kept)")
    grid = labelled_grid([(prompt, pictures[f"before{i}"], pictures[f"after{i}"])
                          for i, prompt in enumerate(MINIATURE_PROMPTS)], titles)
    grid.save(args.out / "grid.png")
    total = len(MINIATURE_PROMPTS) * args.seeds
    summary = [f"{c!r} shown in {shown[('before', c)]}/{total} pictures before, {shown[('after', c)]}/{total} after"
               for c in concepts]
    (args.out / "findings.json").write_text(json.dumps(findings, indent=1))
    (args.out / "report.txt").write_text(report + "\n\nDetector:\n" + "\n".join(summary) + "\n")
    (args.out / "workflow_api.json").write_text(json.dumps(graph, indent=1))
    print(report)
    print("\nRows of grid.png (labelled: left before, right after, same seeds):\n  " + "\n  ".join(MINIATURE_PROMPTS))
    print("\nDetector: " + "; ".join(summary))
    print(f"\nWrote {args.out}/grid.png, spectrum.png, findings.json, report.txt and workflow_api.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="folder for the images and report")
    parser.add_argument("--model", choices=("miniature", "tiny"), default="miniature",
                        help="the pack's trained miniature-world model (default; models/miniature_world.safetensors), "
                             "or a random tiny model of --family")
    parser.add_argument("--forget", default=None, help="concepts to erase, one per line (default: Van Gogh; miniature: red)")
    parser.add_argument("--retain", default=None, help="concepts to keep, one per line (default: Claude Monet; miniature: orange)")
    parser.add_argument("--kind", default=None, help="style, object, identity, explicit content or raw text")
    parser.add_argument("--seeds", type=int, default=6, help="miniature: pictures per prompt")
    parser.add_argument("--prompt", default="a starry night over a village, painting by Van Gogh")
    parser.add_argument("--family", default="SD1.x", help="a family of the demo node (SD1.x, SDXL, Flux, 'Wan 2.1', ...): the tiny model "
                                                          "to build, or the family of --checkpoint")
    parser.add_argument("--checkpoint", help="a real checkpoint file (model, CLIP and VAE in one) to use instead")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    miniature = args.model == "miniature" and not args.checkpoint
    defaults = ("red", "orange", "object") if miniature else ("Van Gogh\nStarry Night", "Claude Monet", "style")
    args.forget, args.retain, args.kind = (value if value is not None else default for value, default in
                                           zip((args.forget, args.retain, args.kind), defaults))
    args.out.mkdir(parents=True, exist_ok=True)
    if miniature:
        run_miniature(args)
        return
    with tempfile.TemporaryDirectory() as base:
        if args.checkpoint:
            checkpoints = Path(base) / "models" / "checkpoints"
            checkpoints.mkdir(parents=True)
            (checkpoints / Path(args.checkpoint).name).symlink_to(Path(args.checkpoint).resolve())
        started = time.time()
        with ComfyServer(Path(base)) as server:
            print(f"ComfyUI is up at {server.url} ({time.time() - started:.1f} s); running the workflow")
            history = server.run(workflow(args))
        outputs = history["outputs"]
        report = outputs["2"]["text"][0]
        for name, node in (("before", "10"), ("after", "11")):
            image = outputs[node]["images"][0]
            shutil.copy(Path(base) / "output" / image["subfolder"] / image["filename"], args.out / f"{name}.png")
    change = compare(args.out / "before.png", args.out / "after.png", args.out / "before_after.png", args.prompt)
    (args.out / "report.txt").write_text(report + "\n")
    (args.out / "workflow_api.json").write_text(json.dumps(workflow(args), indent=1))
    print(report)
    print(f"\nMean pixel change between before and after: {change:.1f} / 255 (before_after.png: before | after | change)")
    print(f"\nWrote {args.out}/before.png, after.png, before_after.png, report.txt and workflow_api.json")


if __name__ == "__main__":
    main()
