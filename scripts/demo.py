"""The main job: a headless ComfyUI erases a concept and writes before/after images and the report.

By default it uses the pack's tiny demo model (random weights, built in a second, no download),
so the pictures are noise and show only *that* the erasure changes what the sampler makes; give
``--checkpoint`` an all-in-one checkpoint of a supported family (and ``--family``) to see real images.

    .venv/bin/python scripts/demo.py --out demo_output [--forget "Van Gogh" --retain "Claude Monet"]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
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
            "layers": "all text-reading layers", "token_selection": "concept + end token", "erase_pooled": False}},
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


def compare(before: Path, after: Path, target: Path) -> float:
    """Before | after | |after - before| (amplified) side by side; returns the mean pixel change (0-255)."""
    import numpy as np
    from PIL import Image
    left, right = Image.open(before).convert("RGB"), Image.open(after).convert("RGB")
    change = np.abs(np.asarray(right, dtype=np.float32) - np.asarray(left, dtype=np.float32))
    amplified = Image.fromarray(np.clip(change * (255.0 / max(float(change.max()), 1.0)), 0, 255).astype(np.uint8))
    canvas = Image.new("RGB", (3 * left.width + 16, left.height), "white")
    for i, panel in enumerate((left, right, amplified)):
        canvas.paste(panel, (i * (left.width + 8), 0))
    canvas.save(target)
    return float(change.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="folder for the images and report")
    parser.add_argument("--forget", default="Van Gogh\nStarry Night", help="concepts to erase, one per line")
    parser.add_argument("--retain", default="Claude Monet", help="concepts to keep, one per line")
    parser.add_argument("--kind", default="style", help="style, object, identity, explicit content or raw text")
    parser.add_argument("--prompt", default="a starry night over a village, painting by Van Gogh")
    parser.add_argument("--family", default="SD1.x", help="a family of the demo node (SD1.x, SDXL, Flux, 'Wan 2.1', ...): the tiny model "
                                                          "to build, or the family of --checkpoint")
    parser.add_argument("--checkpoint", help="a real checkpoint file (model, CLIP and VAE in one) to use instead")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
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
    change = compare(args.out / "before.png", args.out / "after.png", args.out / "before_after.png")
    (args.out / "report.txt").write_text(report + "\n")
    (args.out / "workflow_api.json").write_text(json.dumps(workflow(args), indent=1))
    print(report)
    print(f"\nMean pixel change between before and after: {change:.1f} / 255 (before_after.png: before | after | change)")
    print(f"\nWrote {args.out}/before.png, after.png, before_after.png, report.txt and workflow_api.json")


if __name__ == "__main__":
    main()
