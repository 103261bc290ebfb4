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


def test_the_training_script_at_a_few_steps_writes_a_file_the_loader_reads(pack, tmp_path):
    from scripts.comfy_env import pack_module
    from scripts.train_miniature import main
    out = tmp_path / "miniature.safetensors"
    main(["--out", str(out), "--scenes", "64", "--autoencoder-steps", "2", "--autoencoder-batch", "4", "--text-steps",
          "2", "--text-batch", "8", "--steps", "2", "--batch", "4"])
    model, clip, vae, metadata = pack_module("testbed.miniature").load_miniature(out)
    assert metadata["recipe"]["steps"] == 2 and metadata["recipe"]["resumed_from"] is None
    assert type(model.model).__name__ == "BaseModel" and vae.downscale_ratio == 2


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


def test_an_attack_row_with_the_word_own_embedding_is_the_prompt_itself(benchmark):
    """The attacks' plumbing: a prompt whose concept word is replaced by that word's own vocabulary embedding
    encodes exactly as the prompt does (ComfyUI's own CLIP encode), the differentiable text encoder gives the
    same rows as ComfyUI's, and the denoising loss has a gradient in the embedding."""
    import torch
    from benchmarks.attacks import ErasedDenoiser, _with_embedding
    from scripts.comfy_env import pack_module
    model, clip, sampler = benchmark.load()
    denoiser = ErasedDenoiser(model, clip, sampler.vae, seed=0)
    text = "a striped red circle on a sand background"
    own = denoiser.vocabulary[denoiser.word_ids("red")[0]].clone().requires_grad_(True)
    row = _with_embedding(denoiser, text, "red", own)
    assert len(row) == len(denoiser.tokens(text)) and row[3] is own
    plain = sampler.conditioning(text)[0][0]
    assert torch.equal(denoiser.conditioning(row)[0][0], plain)
    mini = pack_module("testbed.miniature")
    with torch.no_grad(), mini.differentiable_text_encoder(denoiser.text_model):
        assert torch.allclose(denoiser.text_model.forward([denoiser.tokens(text)])[0], plain, atol=1e-5)
    from testbed.miniworld.scenes import Scene
    x0 = denoiser.latents([Scene("circle", "red", "striped", "sand")] * 2)
    loss = denoiser.loss([row, row], x0)
    gradient, = torch.autograd.grad(loss, [own])
    assert loss.item() > 0 and gradient.abs().sum() > 0
    with pytest.raises(ValueError, match="not in the prompt"):
        _with_embedding(denoiser, "a blue circle", "red", own)


def test_the_resurgence_fine_tune_trains_on_unrelated_scenes_and_comes_off_again(benchmark):
    """Issue 14's resurgence probe: ComfyUI's Train LoRA node trains a LoRA on the erased model with scenes that
    show none of the erased concepts; the pictures change with it, and the model it was trained on draws exactly
    as before afterwards (every later method in the run samples the same modules)."""
    import numpy as np
    from benchmarks.resurgence import FinetuneBudget, finetuned, unrelated_scenes
    from testbed.miniworld.scenes import ATTRIBUTES
    scenes = unrelated_scenes(["red", "circle"], 40, seed=0)
    assert len(scenes) == 40 and not any({s.value(a) for a in ATTRIBUTES} & {"red", "circle"} for s, _ in scenes)
    assert all("red" not in text.split() for _, text in scenes)
    model, clip, sampler = benchmark.load()
    prompt = "a solid red circle on a white background"
    before = sampler.images(model, prompt, 2, 7)
    tuned = finetuned(model, clip, sampler.vae, ["red"], FinetuneBudget(pictures=8, steps=20), seed=0)
    assert not np.allclose(sampler.images(tuned, prompt, 2, 7), before, atol=1e-4)
    assert np.array_equal(sampler.images(model, prompt, 2, 7), before)


def test_the_learned_attacks_reach_the_concept_on_the_original_model(benchmark):
    """The sanity row of issue 14's attacks: on the original model the optimisation attack and textual inversion
    (the benchmark's budget) bring red back in at least 90 % of the evaluation pictures."""
    model, clip, sampler = benchmark.load()
    config = benchmark.Config(attacks=["optimisation", "inversion"])
    prompts = benchmark.task_prompts(["red"], [], config)
    figures = benchmark.learned_attacks(sampler, model, "", ["red"], prompts, config)
    assert figures["optimisation_leak"] >= benchmark.SANITY and figures["inversion_leak"] >= benchmark.SANITY, figures
    assert figures["attack_prompts"]["red"].endswith(prompts["erased"][0][0])


def test_the_robust_mode_holds_where_an_added_word_brings_plain_cure_back(benchmark):
    """Issue 14's CI gate: the benchmark's word search (42 words tried in front of red's first erased prompt, the
    best two scored on the evaluation seeds) brings red back after CURE's defaults in at least half the pictures,
    and in at most a quarter after the robust mode (12 context words, α 10); red stays erased and the preserved
    prompts within 5 points (docs/benchmark.md, "Attacks that learn")."""
    model, clip, sampler = benchmark.load()
    config = benchmark.Config(attacks=["word search"])
    figures = {method: benchmark.evaluate(sampler, *benchmark.METHODS[method](model, clip, ["red"], []), ["red"], [],
                                          config)
               for method in ("original", "CURE (defaults)", benchmark.ROBUST_CURE)}
    plain, robust = figures["CURE (defaults)"], figures[benchmark.ROBUST_CURE]
    assert plain["attack_leak"] >= 0.5, plain
    assert robust["attack_leak"] <= 0.25 and robust["erased_rate"] <= 0.1, robust
    assert robust["preserved_acc"] >= figures["original"]["preserved_acc"] - 0.05, (figures["original"], robust)
