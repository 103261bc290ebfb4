"""Does SDXL's pooled text vector (CLIP-G pooled -> label_emb) carry a concept past a cross-attention edit?

On the tiny SDXL (ComfyUI's own classes, random weights, real tokenizers), with P a prompt naming
the concept, N the same prompt without it, R a prompt with a retained concept, and x(.) the latent
after 4 sampling steps (fixed seed):

    pooled share = |x(P tokens, P pooled) - x(P tokens, N pooled)| / |x(P) - x(N)|
                   how much of the concept's effect rides on the pooled vector alone
    residual     = |x'(P) - x'(N)| / |x(P) - x(N)|      for the erased model x', pooled edit off / on
    collateral   = |x'(R) - x(R)| / |x(R)|

Random weights say how the architecture routes the signal, not what a trained SDXL does.

    .venv/bin/python benchmarks/pooled_path.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.comfy_env import load_pack, pack_module  # noqa: E402

PAIRS = [("a starry night over a village, painting by Van Gogh", "a starry night over a village, painting"),
         ("sunflowers in a vase by Van Gogh", "sunflowers in a vase"),
         ("a self portrait, Van Gogh style", "a self portrait")]
RETAINED = ["water lilies, painting by Claude Monet", "a watercolor of a harbour"]


def main() -> None:
    load_pack()
    import comfy.utils
    import nodes as comfy_nodes
    comfy.utils.PROGRESS_BAR_ENABLED = False
    tiny = pack_module("testbed.tiny_models")
    erase = pack_module("comfy_glue.cure").erase_concepts

    def sample(model, conditioning):
        negative = [[torch.zeros_like(conditioning[0][0]), {"pooled_output": torch.zeros_like(
            conditioning[0][1]["pooled_output"])}]]
        latent = {"samples": torch.zeros(1, 4, 16, 16)}
        return comfy_nodes.KSampler().sample(model, 3, 4, 5.0, "euler", "normal", conditioning, negative,
                                             latent)[0]["samples"]

    def mean(values):
        return sum(values) / len(values)

    print("tiny SDXL; forget 'Van Gogh' (style templates), retain 'Claude Monet', 'watercolor'")
    print(f"{'seed':>4} {'pooled share':>13} {'alpha':>6} {'pooled edit':>12} {'residual':>9} {'collateral':>11}")
    for seed in range(3):
        model, clip = tiny.tiny_model("SDXL", seed), tiny.tiny_clip("SDXL", seed)
        cond = {p: clip.encode_from_tokens_scheduled(clip.tokenize(p)) for pair in PAIRS for p in pair}
        cond.update({r: clip.encode_from_tokens_scheduled(clip.tokenize(r)) for r in RETAINED})
        original = {p: sample(model, c) for p, c in cond.items()}
        pooled_share = mean([float((original[p] - sample(model, [[cond[p][0][0], cond[n][0][1]]])).norm()
                                   / (original[p] - original[n]).norm()) for p, n in PAIRS])
        for alpha in (2.0, 1000.0):
            for erase_pooled in (False, True):
                patched, _ = erase(model, clip, "Van Gogh", "Claude Monet\nwatercolor", alpha_forget=alpha,
                                   erase_pooled=erase_pooled)
                residual = mean([float((sample(patched, cond[p]) - sample(patched, cond[n])).norm()
                                       / (original[p] - original[n]).norm()) for p, n in PAIRS])
                collateral = mean([float((sample(patched, cond[r]) - original[r]).norm() / original[r].norm())
                                   for r in RETAINED])
                print(f"{seed:>4} {pooled_share:13.3f} {alpha:6g} {'on' if erase_pooled else 'off':>12} "
                      f"{residual:9.3f} {collateral:11.4f}")


if __name__ == "__main__":
    main()
