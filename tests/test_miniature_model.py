"""The trained miniature model (``models/miniature_world.safetensors``): it is what the training script's
defaults make, it draws what it is prompted with, and the reduced benchmark CI makes holds its gate."""
import json
import subprocess
import sys

import pytest

from conftest import REPO
from testbed.miniworld.scenes import all_concepts

# The bar: every prompted concept in at least 90 % of its pictures (the shipped model: lowest
# 91.7 %, checkered; mean 99.7 %; docs/miniature-world.md).
EVERY_CONCEPT_AT_LEAST = 0.9
MEAN_AT_LEAST = 0.95


@pytest.fixture(scope="module")
def benchmark(pack):
    import benchmarks.miniworld
    return benchmarks.miniworld


def test_the_model_file_is_small_and_says_how_it_was_made(pack):
    from scripts.comfy_env import pack_module
    mini = pack_module("testbed.miniature")
    assert mini.MODEL_FILE.stat().st_size < 20 * 2**20
    *_, metadata = mini.load_miniature()
    recipe = metadata["recipe"]          # one seeded run from scratch: what `train_miniature.py`'s defaults make
    assert recipe["resumed_from"] is None
    from scripts.train_miniature import argument_parser
    defaults = vars(argument_parser().parse_args([]))
    for name in ("scenes", "autoencoder_steps", "text_steps", "text_batch", "steps", "batch", "seed", "lr",
                 "noise_offset"):
        assert recipe[name] == defaults[name], (name, recipe[name], defaults[name])


def test_the_original_model_draws_the_prompted_concepts(benchmark):
    """The quality bar: per concept, 2 prompts (naming it and three other attributes) × 6 fixed seeds,
    read by the detector."""
    model, _, sampler = benchmark.load()
    presence = benchmark.concept_quality(sampler, model, benchmark.Config())
    assert set(presence) == set(all_concepts())
    below = {concept: share for concept, share in presence.items() if share < EVERY_CONCEPT_AT_LEAST}
    assert not below, f"concepts drawn in fewer than {EVERY_CONCEPT_AT_LEAST:.0%} of their pictures: {below}"
    assert sum(presence.values()) / len(presence) >= MEAN_AT_LEAST, presence


def test_the_reduced_benchmark_halves_the_erased_concept_and_keeps_the_rest(tmp_path):
    """The benchmark's ``--quick`` command (docs/benchmark.md): erase "red", then five concepts, through ComfyUI's
    sampler, read by the detector. The gates: on one concept the erased concept's detection rate at least
    halves for both erasers, and the refusal vector loses at most 5 points of preserved-concept accuracy (CURE's
    preserved accuracy there is reported: two of the eight preserved prompts ask for orange, red's neighbour,
    which loses red's direction too). On five concepts CURE's defaults must erase: at most 0.5 of the pictures
    still show an erased concept (the paper's single spectrum over the five leaves them in about 0.97)."""
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "miniworld.py"), "--quick", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {(r["task"], r["method"]): r for r in json.loads((tmp_path / "results.json").read_text())}
    methods = ["original", "CURE (defaults)", "refusal vector"]
    assert list(rows) == [(task, method) for task in ("erase 1", "erase 5") for method in methods]
    for (task, _), row in rows.items():
        assert {"method", "task", "erased_rate", "chance", "preserved_acc", "neighbour_acc", "synonym_leak",
                "attack_leak", "seconds", "per_concept"} <= set(row)
        assert row["chance"] == pytest.approx(0.1 if task == "erase 1" else 0.182, abs=1e-3)
        assert all(0 <= row[k] <= 1 for k in ("erased_rate", "preserved_acc", "neighbour_acc", "synonym_leak"))
        assert set(row["per_concept"]) == set(row["concepts"])          # each erased concept's own rate
        assert all(0 <= c["unprompted"] <= 1 for c in row["per_concept"].values())
    original, cure, refusal = (rows["erase 1", m] for m in methods)
    assert original["erased_rate"] >= 0.9 and original["preserved_acc"] >= 0.9     # the model draws what it is asked
    assert 0 < original["seconds"] < min(cure["seconds"], refusal["seconds"])      # the original is no edit
    assert refusal["erased_rate"] <= original["erased_rate"] / 2, (original, refusal)
    assert cure["erased_rate"] <= original["erased_rate"] / 2, (original, cure)
    assert refusal["preserved_acc"] >= original["preserved_acc"] - 0.05, (original, refusal)
    original5, cure5 = rows["erase 5", "original"], rows["erase 5", "CURE (defaults)"]
    assert original5["erased_rate"] >= 0.9
    assert cure5["erased_rate"] <= 0.5, cure5
    # Left unnamed, the background comes out sand (the model's prior), red rarely: docs/benchmark.md
    assert original5["per_concept"]["sand"]["unprompted"] >= 0.5 > original5["per_concept"]["red"]["unprompted"]
    assert (tmp_path / "results.md").read_text().count("\n") == len(rows) + 2
    assert (tmp_path / "results.png").stat().st_size > 0


def test_the_denoiser_source_erases_with_its_defaults_and_not_as_the_paper_sets_it(benchmark):
    """Issue: the refusal vector's denoiser source must erase. With the node's defaults (every image token of
    every block, rank 16) red and teal fall to at most a quarter of their pictures, the preserved prompts within
    5 points; as the paper sets it (token mean of the last two blocks, one direction) red stays (docs/method.md)."""
    model, clip, sampler = benchmark.load()
    config = benchmark.Config(attack_concepts=0)
    figures = {}
    for method in ("original", "refusal vector (denoiser source)", "refusal vector (denoiser source, paper recipe)"):
        for concept in ("red", "teal"):
            erased, negative = benchmark.METHODS[method](model, clip, [concept], [])
            figures[method, concept] = benchmark.evaluate(sampler, erased, negative, [concept], [], config)
    for concept in ("red", "teal"):
        original, measured = figures["original", concept], figures["refusal vector (denoiser source)", concept]
        assert original["erased_rate"] >= 0.9
        assert measured["erased_rate"] <= 0.25, (concept, measured)
        assert measured["preserved_acc"] >= original["preserved_acc"] - 0.05, (concept, original, measured)
    assert figures["refusal vector (denoiser source, paper recipe)", "red"]["erased_rate"] >= 0.8
