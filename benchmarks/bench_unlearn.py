"""Time per iteration and peak memory of the Unlearn Concept (fine-tune) node.

Prints, for the trained miniature model (SD1-style UNet, 16x16 latent) and a tiny Wan 2.1 (random weights,
8x8 latent, 2 latent frames): the whole node's time divided by its iterations (median of the runs) and the
process's peak resident memory after training (the models included).

    .venv/bin/python benchmarks/bench_unlearn.py [--iterations 20] [--repeats 3] [--localise-weight 5]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.comfy_env import load_pack, pack_module  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # Linux reports KiB


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--localise-weight", type=float, default=0.0,
                        help="the node's localise_weight (> 0: each iteration also reads the concept's cross-attention)")
    args = parser.parse_args(argv)
    load_pack()
    unlearning = pack_module("comfy_glue.unlearning")
    miniature = pack_module("testbed.miniature")
    tiny = pack_module("testbed.tiny_models")
    model, clip, _, _ = miniature.load_miniature(miniature.MODEL_FILE)
    cases = [("miniature model (SD1-style UNet, 16x16 latent)", model, clip, "red",
              dict(templates_text="{}\na {} shape", latent_size=miniature.LATENT_SIZE)),
             ("tiny Wan 2.1 (random weights, 8x8 latent, 2 frames)", tiny.tiny_model("Wan 2.1"),
              tiny.tiny_clip("Wan 2.1"), "nudity", dict(latent_size=8, latent_frames=2))]
    for name, model, clip, concept, options in cases:
        per_iteration = []
        for repeat in range(args.repeats):
            started = time.perf_counter()
            unlearning.unlearn_concept(model, clip, concept, iterations=args.iterations, seed=repeat,
                                       localise_weight=args.localise_weight, **options)
            per_iteration.append((time.perf_counter() - started) / args.iterations)
        print(f"{name}: {statistics.median(per_iteration) * 1000:.0f} ms per iteration "
              f"(median of {args.repeats} runs of {args.iterations}; min {min(per_iteration) * 1000:.0f}, "
              f"max {max(per_iteration) * 1000:.0f}); peak resident memory so far {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
