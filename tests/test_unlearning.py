"""Unlearn Concept (fine-tune): T2VUnlearning's negatively guided fine-tuning, on a toy denoiser (the training
math) and on ComfyUI's own model classes (tiny, random weights: the node's wiring, patches, cancel, LoRA export)."""
import pytest
import torch

from conftest import pack_module
from test_comfy_erase import assert_same_state, loaded_weights, snapshot

from cure_core.unlearning import (UnlearnSettings, concept_mask, concept_prompts, negatively_guided_target,
                                  unlearn)


# ---- the training math, on a toy denoiser --------------------------------------------------------------

class ToyDenoiser:
    """x0 = x (1 − s) + s · (e_p @ (W + A B)): a prompt-conditioned linear predictor with a rank-2 adapter."""

    def __init__(self, prompts, dim=6, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.embed = {p: torch.randn(dim, generator=g) for p in prompts}
        self.embed[""] = torch.zeros(dim)
        self.weight = torch.randn(dim, dim, generator=g)
        self.up = torch.nn.Parameter(torch.randn(dim, 2, generator=g) * 0.1)
        self.down = torch.nn.Parameter(torch.zeros(2, dim))

    def one(self, x, sigma, prompt, adapted):
        weight = self.weight + self.up @ self.down if adapted else self.weight
        s = sigma / (1 + sigma)
        return x * (1 - s) + s * (self.embed[prompt] @ weight) + 0.1 * self.embed[prompt].sum()

    def predict(self, x, sigma, prompts, adapted):
        return [self.one(x, sigma, p, adapted) for p in prompts]

    def start(self, generator):
        return torch.randn(6, generator=generator) * 2.0


def test_the_target_is_the_unconditional_prediction_pushed_away_from_the_concept():
    uncond, cond = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 1.0])
    assert torch.allclose(negatively_guided_target(uncond, cond, 0.0), uncond)
    assert torch.allclose(negatively_guided_target(uncond, cond, 3.0), torch.tensor([1.0 - 6.0, 2.0 + 3.0]))


def test_training_moves_the_concept_to_its_target_and_holds_the_kept_prompt():
    toy = ToyDenoiser(["cat", "dog"])
    sigmas = torch.linspace(2.0, 0.0, 6)
    losses = unlearn(toy, [toy.up, toy.down], ["cat"], ["dog"], sigmas,
                     UnlearnSettings(eta=2.0, iterations=300, learning_rate=3e-2, guidance=1.0))
    assert sum(losses[-20:]) < 0.05 * sum(losses[:20])
    x, sigma = torch.randn(6), torch.tensor(1.0)
    with torch.no_grad():
        target = negatively_guided_target(toy.one(x, sigma, "", False), toy.one(x, sigma, "cat", False), 2.0)
        before = (toy.one(x, sigma, "cat", False) - target).norm()
        after = (toy.one(x, sigma, "cat", True) - target).norm()
        kept = (toy.one(x, sigma, "dog", True) - toy.one(x, sigma, "dog", False)).norm()
    assert after < 0.1 * before
    assert kept < 0.1 * before


def test_without_keep_prompts_the_unconditional_prediction_is_held():
    """No keep concept given: the empty prompt's prediction (what every guided picture starts from) is held to the
    frozen model's, unless preserve_weight is 0; the concept still moves."""
    def train(preserve_weight):
        toy = ToyDenoiser(["cat"])
        toy.embed[""] = torch.randn(6, generator=torch.Generator().manual_seed(11))
        unlearn(toy, [toy.up, toy.down], ["cat"], [], torch.linspace(2.0, 0.0, 6),
                UnlearnSettings(eta=2.0, iterations=300, learning_rate=3e-2, guidance=1.0,
                                preserve_weight=preserve_weight))
        x, sigma = torch.randn(6, generator=torch.Generator().manual_seed(5)), torch.tensor(1.0)
        with torch.no_grad():
            return [(toy.one(x, sigma, p, True) - toy.one(x, sigma, p, False)).norm() for p in ("", "cat")]
    held, moved_held = train(1.0)
    free, moved_free = train(0.0)
    assert held < 0.2 * free, (float(held), float(free))
    assert moved_held > 0.5 * moved_free


def test_the_same_seed_trains_the_same_adapter():
    results = []
    for _ in range(2):
        toy = ToyDenoiser(["cat"])
        unlearn(toy, [toy.up, toy.down], ["cat"], [], torch.linspace(2.0, 0.0, 5),
                UnlearnSettings(iterations=20, seed=3))
        results.append(toy.down.detach().clone())
    assert torch.equal(*results) and results[0].abs().sum() > 0


class ToyPicture(ToyDenoiser):
    """The toy's six outputs as a 2 × 3 picture whose concept attends to the left column only."""

    ATTENTION = torch.tensor([[0.9, 0.02, 0.0], [1.0, 0.05, 0.01]])

    def one(self, x, sigma, prompt, adapted):
        return super().one(x.reshape(6), sigma, prompt, adapted).reshape(2, 3)

    def start(self, generator):
        return super().start(generator).reshape(2, 3)

    def concept_attention(self, x, sigma, prompt):
        return self.ATTENTION if prompt == "cat" else None


def test_the_mask_is_where_the_attention_reaches_a_tenth_of_its_range_per_frame():
    frames = torch.stack([ToyPicture.ATTENTION, 5.0 + 2.0 * ToyPicture.ATTENTION.flip(-1), torch.ones(2, 3)])
    mask = concept_mask(frames)
    assert torch.equal(mask[0], torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    assert torch.equal(mask[1], torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]))     # its own range, not frame 0's
    assert torch.equal(mask[2], torch.ones(2, 3))         # no region stands out: nothing is held


def test_localisation_holds_the_change_outside_the_concepts_region():
    def train(weight):
        toy = ToyPicture(["cat"])
        unlearn(toy, [toy.up, toy.down], ["cat"], [], torch.linspace(2.0, 0.0, 6),
                UnlearnSettings(eta=2.0, iterations=300, learning_rate=3e-2, guidance=1.0, localise_weight=weight))
        x, sigma = torch.randn(2, 3, generator=torch.Generator().manual_seed(7)), torch.tensor(1.0)
        with torch.no_grad():
            change = toy.one(x, sigma, "cat", True) - toy.one(x, sigma, "cat", False)
        return change[:, 0].norm(), change[:, 1:].norm()
    inside_free, outside_free = train(0.0)
    inside_held, outside_held = train(10.0)
    assert outside_held < 0.3 * outside_free, (float(outside_held), float(outside_free))
    assert inside_held > 0.5 * inside_free, (float(inside_held), float(inside_free))


@pytest.mark.parametrize("settings, message", [
    (dict(eta=-1.0), "eta"), (dict(eta=float("nan")), "eta"), (dict(iterations=0), "iterations"),
    (dict(learning_rate=0.0), "learning_rate"), (dict(guidance=0.5), "guidance"), (dict(preserve_weight=-1), "preserve"),
    (dict(localise_weight=-0.5), "localise_weight"),
])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        UnlearnSettings(**settings).checked()


def test_concept_prompts_cover_every_template_and_the_users_prompts_once():
    prompts = concept_prompts(["nudity", "gore"], ["{}", "a photo of {}"], ["a photo of gore", "nudity at a beach"])
    assert prompts == ["nudity", "a photo of nudity", "gore", "a photo of gore", "nudity at a beach"]


# ---- the node on ComfyUI's classes -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def unlearning(pack):
    return pack_module("comfy_glue.unlearning")


FAST = dict(iterations=12, learning_rate=1e-2, latent_size=8, eta=2.0)


def _latent(model, size=8):
    return pack_module("comfy_glue.denoiser_activations").empty_latent(model, size)


def predictions(model, clip, prompts, seed=0):
    """Each prompt's clean-sample prediction at one fixed noisy state: one Euler step from ``sigma`` to 0 at CFG 1
    through ComfyUI's sampler lands exactly on the model's prediction (as a latent, which is an affine map of it)."""
    import comfy.sample
    import comfy.samplers
    latent = _latent(model)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    sigmas = torch.tensor([model.get_model_object("model_sampling").percent_to_sigma(0.5), 0.0])   # mid-schedule
    out = {}
    for prompt in prompts:
        cond = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))
        out[prompt] = comfy.sample.sample_custom(model, noise, 1.0, comfy.samplers.sampler_object("euler"), sigmas,
                                                 cond, cond, latent, disable_pbar=True, seed=seed)
    return out


@pytest.mark.parametrize("family", ["SD1.x", "SDXL", "SD3", "Wan 2.1", "Flux"])
def test_the_concept_moves_toward_its_target_and_the_input_model_is_untouched(family, built, unlearning, comfy):
    model, clip = built(family)
    before = snapshot(model)
    concept, kept = "Van Gogh", "a red apple"
    patched, report, curve = unlearning.unlearn_concept(model, clip, concept, "red apple", "", "{}\na {}",
                                                       layers=unlearning.ATTENTION, **{**FAST, "iterations": 40},
                                                       latent_frames=2 if family == "Wan 2.1" else 1)   # video: 2 frames
    assert_same_state(before, snapshot(model)) and model.patches == {}
    keys = unlearning.adapted_layer_keys(model, pack_module("comfy_glue.family").detect_family(model),
                                        unlearning.ATTENTION)
    assert keys and set(patched.patches) == set(keys)
    assert "T2VUnlearning" in report and f"LoRA on {len(keys)} attention projections" in report
    assert curve.shape[0] == 1 and curve.shape[-1] == 3
    for name, module in model.model.named_modules():       # no training wrapper left on the shared modules
        assert not any(isinstance(f, unlearning._SwitchableLoRA) for f in getattr(module, "weight_function", [])), name
    original = predictions(model, clip, ["", concept, kept])
    erased = predictions(patched, clip, [concept, kept])
    target = negatively_guided_target(original[""], original[concept], 2.0)
    start, end = (original[concept] - target).norm(), (erased[concept] - target).norm()
    assert end < 0.9 * start, (float(start), float(end))
    moved = (erased[concept] - original[concept]).norm()
    assert (erased[kept] - original[kept]).norm() < moved
    again = predictions(model, clip, [concept])              # the input model still predicts as before
    assert torch.equal(again[concept], original[concept])


def test_the_same_seed_gives_the_same_patches_and_the_text_layer_option_edits_those_only(built, unlearning, comfy):
    model, clip = built("SD1.x")
    first, _, _ = unlearning.unlearn_concept(model, clip, "Van Gogh", **FAST, seed=5)
    second, _, _ = unlearning.unlearn_concept(model, clip, "Van Gogh", **FAST, seed=5)
    keys = sorted(first.patches)
    assert keys == sorted(second.patches)
    a, b = loaded_weights(comfy, first, keys), loaded_weights(comfy, second, keys)
    assert all(torch.equal(a[k], b[k]) for k in keys)
    text_only, _, _ = unlearning.unlearn_concept(model, clip, "Van Gogh", **FAST, layers=unlearning.TEXT_READING)
    from cure_core.families import family_for_config
    family = family_for_config(type(model.model.model_config).__name__)
    assert set(text_only.patches) == set(family.text_layer_keys(model.model.state_dict().keys()))


def test_cancel_stops_cleanly_and_patches_nothing(built, unlearning, monkeypatch):
    import comfy.model_management
    model, clip = built("SD1.x")
    before = snapshot(model)
    calls = []

    def interrupted():
        calls.append(1)
        if len(calls) == 3:
            raise comfy.model_management.InterruptProcessingException()
    monkeypatch.setattr(comfy.model_management, "throw_exception_if_processing_interrupted", interrupted)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        unlearning.unlearn_concept(model, clip, "Van Gogh", **FAST)
    assert len(calls) == 3
    assert_same_state(before, snapshot(model)) and model.patches == {}
    for name, module in model.model.named_modules():
        assert not any(isinstance(f, unlearning._SwitchableLoRA) for f in getattr(module, "weight_function", [])), name


@pytest.mark.parametrize("kwargs, message", [
    (dict(concepts_text="  "), "No concept"), (dict(keep_text="van gogh"), "both unlearned and kept"),
    (dict(templates_text="a painting"), "exactly one"), (dict(eta=-1.0), "eta"), (dict(rank=0), "rank"),
    (dict(iterations=0), "iterations"), (dict(layers="every layer"), "layers"), (dict(latent_size=2), "latent_size"),
])
def test_bad_input_is_refused_before_anything_changes(kwargs, message, built, unlearning):
    model, clip = built("SD1.x")
    before = snapshot(model)
    arguments = dict(concepts_text="Van Gogh", **FAST)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        unlearning.unlearn_concept(model, clip, **arguments)
    assert_same_state(before, snapshot(model)) and model.patches == {}


@pytest.mark.parametrize("family", ["SD1.x", "Wan 2.1"])
def test_the_concept_attention_is_a_map_on_the_latent_grid_and_localisation_trains(family, built, unlearning, comfy):
    model, clip = built(family)
    before = snapshot(model)
    positions = unlearning.concept_token_positions(clip, pack_module("comfy_glue.family").detect_family(model),
                                                   ["Van Gogh"], ["a painting by {}"], [])
    if family == "SD1.x":
        assert positions == {"a painting by Van Gogh": [4, 5]}     # start, a, painting, by | van, gogh
    assert list(positions) == ["a painting by Van Gogh"] and positions["a painting by Van Gogh"]
    seen = {}

    def probe(model_wrap, sigmas, extra_args, noise):
        denoiser = unlearning._ComfyDenoiser(model_wrap, extra_args, noise, sigmas, [], positions)
        x = noise * sigmas[0]
        with torch.no_grad():
            seen["map"] = denoiser.concept_attention(x, sigmas[0], "a painting by Van Gogh")
            seen["none"] = denoiser.concept_attention(x, sigmas[0], "a red apple")
    run_in_guider(model, clip, ["a painting by Van Gogh", "a red apple"], probe)
    attention = seen["map"]
    assert attention.shape == (1, 1, *_latent(model).shape[2:]) and seen["none"] is None
    assert float(attention.min()) >= 0 and float(attention.max()) <= 1 and float(attention.std()) > 0
    mask = concept_mask(attention)
    assert 0 < float(mask.mean()) < 1
    patched, report, _ = unlearning.unlearn_concept(model, clip, "Van Gogh", **{**FAST, "iterations": 4},
                                                    localise_weight=2.0)
    assert "localisation weight 2" in report and patched.patches
    assert_same_state(before, snapshot(model)) and model.patches == {}


def test_localisation_says_why_not_on_a_model_without_cross_attention(built, unlearning):
    model, clip = built("Flux")
    before = snapshot(model)
    with pytest.raises(ValueError, match="jointly.*localise_weight to 0"):
        unlearning.unlearn_concept(model, clip, "Van Gogh", **FAST, localise_weight=1.0)
    assert_same_state(before, snapshot(model)) and model.patches == {}


def run_in_guider(model, clip, prompts, function):
    """Call ``function(model_wrap, sigmas, extra_args, noise)`` inside a guider's sampling, as the trainer is."""
    import comfy.sample
    import comfy.samplers
    unlearning = pack_module("comfy_glue.unlearning")
    conds = {unlearning._cond_name(p): clip.encode_from_tokens_scheduled(clip.tokenize(p)) for p in ["", *prompts]}
    latent = _latent(model)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 4)
    guider = comfy.samplers.CFGGuider(model)
    guider.inner_set_conds(conds)
    guider.sample(comfy.sample.prepare_noise(latent, 0), latent, unlearning._TrainingSampler(function), sigmas,
                  disable_pbar=True, seed=0)


def test_the_learned_lora_saves_and_reloads_with_the_stock_loader(built, unlearning, comfy, tmp_path):
    from comfy.sd import load_lora_for_models
    model, clip = built("SD1.x")
    patched, _, _ = unlearning.unlearn_concept(model, clip, "Van Gogh", **FAST)
    state_dict, metadata = pack_module("comfy_glue.lora_export").erasure_lora(patched, torch.float32)
    path = tmp_path / "unlearned.safetensors"
    comfy.utils.save_torch_file(state_dict, str(path), metadata=metadata)
    reloaded, _ = load_lora_for_models(model, None, comfy.utils.load_torch_file(str(path)), 1.0, 0.0)
    keys = sorted(patched.patches)
    assert sorted(reloaded.patches) == keys
    tuned, from_file = loaded_weights(comfy, patched, keys), loaded_weights(comfy, reloaded, keys)
    original = loaded_weights(comfy, model, keys)
    assert any(not torch.equal(tuned[k], original[k]) for k in keys)
    for key in keys:
        assert torch.allclose(tuned[key], from_file[key], atol=1e-6, rtol=1e-5), key
    assert "T2VUnlearning (fine-tune)" in metadata["erasure_recipes"]


def test_the_learned_lora_goes_through_erasure_files_and_the_spectrum(built, unlearning, comfy, tmp_path):
    from test_erasure_files import assert_same_weights, saved
    files = pack_module("comfy_glue.erasure_files")
    model, clip = built("SD1.x")
    patched, _, _ = unlearning.unlearn_concept(model, clip, "Van Gogh", **FAST)
    erasure_file = saved(files, patched, tmp_path, "unlearned")
    assert erasure_file.erasures[0].record.recipe["method"] == "T2VUnlearning (fine-tune)"
    applied, report = files.apply_erasure_file(pack_module("testbed.tiny_models").tiny_model("SD1.x"), erasure_file)
    assert_same_weights(comfy, patched, applied, sorted(patched.patches))
    with pytest.raises(ValueError, match="Only CURE erasures can be combined"):
        files.combine_erasure_files(model, [("unlearned", erasure_file)])
    picture = pack_module("comfy_glue.spectrum_chart").spectrum_image(patched)
    assert picture.ndim == 4 and picture.shape[-1] == 3 and float(picture.std()) > 0


def test_a_loss_that_becomes_nan_stops_training_with_a_message():
    toy = ToyDenoiser(["cat"])
    toy.embed["cat"] = torch.full((6,), float("nan"))
    with pytest.raises(ValueError, match="lower learning_rate"):
        unlearn(toy, [toy.up, toy.down], ["cat"], [], torch.linspace(2.0, 0.0, 5), UnlearnSettings(iterations=3))
    assert torch.isfinite(toy.up).all() and torch.isfinite(toy.down).all()
