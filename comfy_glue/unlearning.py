"""T2VUnlearning's fine-tuning on a ComfyUI MODEL: what the **Unlearn Concept (fine-tune)** node does.

A LoRA (ComfyUI's own trainable ``comfy.weight_adapter`` LoRA, as ``comfy_extras/nodes_train.py`` builds it) is
attached as weight wrappers to a training clone; ComfyUI's guider loads the model and prepares every prompt's
conditioning for the family (pooled vectors, extra inputs) and hands the trainer its model wrapper, through which
:func:`cure_core.unlearning.unlearn` calls the denoiser. The learned factors end as ordinary low-rank patches on a
fresh clone of the input MODEL, so the pack's Save Erasure as LoRA, baking and the stock samplers treat them as
they treat the other erasures. The input MODEL is never modified; a cancelled or failed run patches nothing."""
from __future__ import annotations

import re

import numpy as np
import torch
from PIL import Image, ImageDraw

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
from comfy.weight_adapter import LoRAAdapter

from ..cure_core.concepts import check_templates, expand, parse_concepts
from ..cure_core.checks import check_choice, check_disjoint
from ..cure_core.edit import LayerEdit
from ..cure_core.families import Family
from ..cure_core.unlearning import (DEFAULT_ETA, DEFAULT_ITERATIONS, DEFAULT_LEARNING_RATE, DEFAULT_LOCALISE_WEIGHT,
                                    METHOD, UnlearnSettings, concept_prompts, unlearn)
from .denoiser_activations import empty_latent
from .encoding import active_segments, locate_concept
from .family import detect_family
from .patching import patched_clone
from .spectrum_chart import image_tensor
from .weights import effective_weight

# Which layers get the adapter: every attention projection of the denoiser, or only the layers that read the text.
ATTENTION, TEXT_READING = "attention projections", "text-reading layers"
LAYER_SETS = (ATTENTION, TEXT_READING)
_ATTENTION_NAME = re.compile(r"(^|[._])(attn\d*|attention|self_attn|cross_attn|img_attn|txt_attn)([._]|$)")
SAMPLING_STEPS = 20                 # the schedule x_t is sampled on (Euler, the family's "normal" schedule)


def adapted_layer_keys(model, family: Family, layers: str) -> list[str]:
    """The 2-D weights that get a LoRA, in state-dict order."""
    check_choice(layers, LAYER_SETS, "layers")
    if layers == TEXT_READING:
        return family.text_layer_keys(model.model.state_dict().keys())
    keys = []
    for name, module in model.model.diffusion_model.named_modules():
        weight = getattr(module, "weight", None)
        # ComfyUI's own linear layers; the mixed-precision ones are not torch.nn.Linear subclasses
        comfy_linear = hasattr(module, "weight_function") and getattr(weight, "ndim", 0) == 2
        if (isinstance(module, torch.nn.Linear) or comfy_linear) and weight is not None and _ATTENTION_NAME.search(name):
            keys.append(f"diffusion_model.{name}.weight")
    return keys


class _SwitchableLoRA(torch.nn.Module):
    """ComfyUI's trainable LoRA (``W + (α/r) up @ down``) with a switch, so the trainer can ask the frozen base.

    ``gain`` is what the layer multiplies a weight wrapper's change by (:func:`wrapper_gain`): 1 for most layers,
    a scaled-fp8 layer's weight scale (its wrappers see the stored, unscaled weight). The change is divided by it,
    so that ``up @ down`` is the change the layer computes with, and trains at the same pace, in every format."""

    def __init__(self, weight: torch.Tensor, rank: int, gain: float = 1.0):
        super().__init__()
        self.lora = LoRAAdapter.create_train(weight, rank=rank, alpha=1.0)
        self.enabled = True
        self.gain = gain

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        change = (self.lora.lora_up.weight @ self.lora.lora_down.weight) * (self.scale / self.gain)
        return (weight + change.reshape(weight.shape)).to(weight.dtype)

    @property
    def scale(self) -> float:
        """The LoRA's ``α/r``."""
        return float(self.lora.alpha) / self.lora.rank

    def passive_memory_usage(self) -> int:
        return self.lora.passive_memory_usage()

    def move_to(self, device) -> int:
        return self.lora.move_to(device)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(up, down)`` with ``up @ down`` the learned weight change."""
        return ((self.lora.lora_up.weight.detach().float() * self.scale).clone(),
                self.lora.lora_down.weight.detach().float().clone())


@torch.no_grad()
def wrapper_gain(layer: torch.nn.Module) -> float:
    """How much of a change that a weight wrapper makes reaches the layer's output, measured on the layer itself.

    A trainable LoRA rides on ComfyUI's weight wrappers (``weight_function``), which each kind of layer applies
    its own way: most to the weight it computes with (1), a scaled-fp8 layer to the stored weight before its
    scale (the scale), and ComfyUI-GGUF's quantized layers not at all (0). Measured as ``⟨Δy, x Dᵀ⟩ / ‖x Dᵀ‖²``
    for a random input ``x`` and a random rank-1 change ``D = u vᵀ``, on the layer's device; the layer's own
    wrappers are put back."""
    saved = getattr(layer, "weight_function", None)
    if saved is None:           # not one of ComfyUI's layers: nothing applies wrappers
        return 0.0
    out_features, in_features = layer.weight.shape
    generator = torch.Generator().manual_seed(0)
    x, u, v = (torch.randn(shape, generator=generator).to(layer.weight.device)
               for shape in ((2, in_features), (out_features,), (in_features,)))
    try:
        layer.weight_function = [lambda w: w]
        base = layer(x).float()
        layer.weight_function = [lambda w: w + torch.outer(u, v).to(w)]
        moved = layer(x).float() - base
    finally:
        layer.weight_function = saved
    expected = torch.outer(x @ v, u)
    return float((moved * expected).sum() / (expected * expected).sum())


class _FrozenBase:
    """The base model's parameters out of autograd while the adapters train, as they were afterwards.

    Models load with ``requires_grad`` on; left so, every backward pass would also compute (and store on the
    input MODEL's modules) a gradient for every weight, and fail on fp8 weights."""

    def __init__(self, module: torch.nn.Module):
        self.flags = [(owner, name, tensor.requires_grad) for owner in module.modules()
                      for name, tensor in owner.named_parameters(recurse=False)]

    def __enter__(self) -> "_FrozenBase":
        for owner, name, _ in self.flags:
            getattr(owner, name).requires_grad_(False)
        return self

    def __exit__(self, *_exc) -> None:
        for owner, name, flag in self.flags:
            tensor = getattr(owner, name)
            if tensor is not None and tensor.is_leaf and tensor.dtype.is_floating_point:
                tensor.requires_grad_(flag)


class _ComfyDenoiser:
    """:class:`cure_core.unlearning.Denoiser` over the model wrapper a ComfyUI guider hands its sampler."""

    def __init__(self, model_wrap, extra_args: dict, noise: torch.Tensor, sigmas: torch.Tensor,
                 adapters: list[_SwitchableLoRA], concept_tokens: dict[str, list[int]] | None = None):
        self.model_wrap, self.model_options = model_wrap, extra_args["model_options"]
        self.noise, self.sigmas, self.adapters = noise, sigmas, adapters
        self.sampling = model_wrap.inner_model.model_sampling
        self.concept_tokens = concept_tokens or {}

    def start(self, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(self.noise.shape, generator=generator).to(self.noise)
        return self.sampling.noise_scaling(self.sigmas[0], noise, torch.zeros_like(noise), True)

    def predict(self, x: torch.Tensor, sigma: torch.Tensor, prompts, adapted: bool) -> list[torch.Tensor]:
        return self.predict_with(x, sigma, prompts, adapted, self.model_options)

    def concept_attention(self, x: torch.Tensor, sigma: torch.Tensor, prompt: str) -> torch.Tensor | None:
        tokens = self.concept_tokens.get(prompt)
        if not tokens:
            return None
        maps: list[torch.Tensor] = []
        text_tokens = self.model_wrap.conds[_cond_name(prompt)][0]["cross_attn"].shape[1]
        transformer_options = {**self.model_options.get("transformer_options", {}),
                               "optimized_attention_override": _AttentionCapture(tokens, text_tokens, maps)}
        self.predict_with(x, sigma, [prompt], False, {**self.model_options, "transformer_options": transformer_options})
        grids = [grid for grid in (_on_latent_grid(m, x) for m in maps) if grid is not None]
        if not grids:
            raise ValueError("Localisation needs the denoiser's cross-attention from image to text tokens, and this "
                             "model has none (it attends to text and image tokens jointly, like Flux and SD3): set "
                             "localise_weight to 0.")
        return torch.stack(grids).mean(0)

    def predict_with(self, x, sigma, prompts, adapted: bool, model_options: dict) -> list[torch.Tensor]:
        for adapter in self.adapters:
            adapter.enabled = adapted
        conds = [self.model_wrap.conds[_cond_name(p)] for p in prompts]
        return comfy.samplers.calc_cond_batch(self.model_wrap.inner_model, conds, x, sigma.reshape(1).to(x),
                                              model_options)


class _AttentionCapture:
    """An attention override (ComfyUI's ``optimized_attention_override``) that computes attention as usual and
    keeps, for every cross-attention from image tokens to the text (``text_tokens`` keys, fewer or more than the
    queries), the attention to ``tokens`` (mean over heads and tokens; ``[batch, image tokens]``). Other attention
    (self-attention, joint attention, image-prompt keys) is passed through."""

    def __init__(self, tokens: list[int], text_tokens: int, maps: list[torch.Tensor]):
        self.tokens, self.text_tokens, self.maps = tokens, text_tokens, maps

    def __call__(self, attention, q, k, v, heads, *args, skip_reshape=False, **kwargs):
        if skip_reshape:                      # [batch, heads, tokens, dim]
            queries, keys = q, k
        else:                                 # [batch, tokens, heads · dim]
            queries, keys = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k))
        if keys.shape[-2] == self.text_tokens != queries.shape[-2]:
            scores = (queries.float() @ keys.float().transpose(-1, -2)) * queries.shape[-1] ** -0.5
            self.maps.append(scores.softmax(-1)[..., self.tokens].mean(dim=(1, 3)))
        return attention(q, k, v, heads, *args, skip_reshape=skip_reshape, **kwargs)


def _on_latent_grid(attention: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
    """A ``[batch, image tokens]`` map as ``[batch, 1, (frames,) height, width]`` on the latent ``x`` (each token
    covers an ``s × s`` patch of every latent frame, ``s`` from the token count), or None if it does not tile it."""
    frames = x.shape[2] if x.ndim == 5 else 1
    height, width = x.shape[-2:]
    scale = round((frames * height * width / attention.shape[1]) ** 0.5)
    tiles = scale >= 1 and not height % scale and not width % scale
    if not tiles or frames * (height // scale) * (width // scale) != attention.shape[1]:
        return None
    grid = attention.reshape(attention.shape[0], 1, frames, height // scale, width // scale)
    grid = grid.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1).to(x.dtype)
    return grid if x.ndim == 5 else grid[:, :, 0]


def concept_token_positions(clip, family: Family, concepts: list[str], templates,
                            extra: list[str]) -> dict[str, list[int]]:
    """Per training prompt, where its concept's tokens are among the text rows the denoiser attends to (the first
    text encoder's rows, which the context starts with); the user's own prompts by the first concept they contain."""
    segment = active_segments(clip, family.segments)[0]
    written = expand(concepts, tuple(templates))                   # (concept, prefix, suffix)
    for prompt in extra:
        concept = next((c for c in concepts if c.lower() in prompt.lower()), None)
        if concept is not None:
            start = prompt.lower().index(concept.lower())
            written.append((concept, prompt[:start], prompt[start + len(concept):]))
    positions = {}
    for concept, prefix, suffix in written:
        prompt = prefix + concept + suffix
        if prompt not in positions:
            positions[prompt] = locate_concept(clip, concept, prefix, suffix, [segment])[1][segment.tokens].concept
    return positions


def _cond_name(prompt: str) -> str:
    return "prompt: " + prompt


class _TrainingSampler(comfy.samplers.Sampler):
    """Runs the whole training inside the guider's sampling call (model loaded, conditionings prepared)."""

    def __init__(self, train):
        self.train = train

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        self.train(model_wrap, sigmas, extra_args, noise)
        return torch.zeros_like(noise)


def unlearn_concept(model, clip, concepts_text: str, keep_text: str = "", prompts_text: str = "",
                    templates_text: str = "", eta: float = DEFAULT_ETA, iterations: int = DEFAULT_ITERATIONS,
                    learning_rate: float = DEFAULT_LEARNING_RATE,
                    rank: int = 4, preserve_weight: float = 1.0, guidance: float = 5.0, layers: str = ATTENTION,
                    latent_size: int = 64, latent_frames: int = 1, seed: int = 0,
                    localise_weight: float = DEFAULT_LOCALISE_WEIGHT):
    """Everything the node does, as a function: ``(patched clone, report, loss curve IMAGE)``."""
    concepts = parse_concepts(concepts_text)
    if not concepts:
        raise ValueError("No concept to unlearn: type at least one concept (one per line).")
    keep = parse_concepts(keep_text)
    check_disjoint(concepts, keep, "unlearned", "kept")
    templates = check_templates(parse_concepts(templates_text) or ["{}"])
    settings = UnlearnSettings(eta=eta, iterations=iterations, learning_rate=learning_rate,
                               preserve_weight=preserve_weight, guidance=guidance, seed=seed,
                               localise_weight=localise_weight).checked()
    if not (isinstance(rank, int) and 1 <= rank <= 1024):
        raise ValueError(f"rank must be a whole number from 1 to 1024 (got {rank!r}).")
    if not (4 <= latent_size <= 512 and 1 <= latent_frames <= 64):
        raise ValueError(f"latent_size must be 4 to 512 and latent_frames 1 to 64 (got {latent_size}, {latent_frames}).")
    family = detect_family(model)
    keys = adapted_layer_keys(model, family, layers)
    if not keys:
        raise ValueError(f"No {layers} found in this {family.name} model; choose the other layers option.")
    extra_prompts = parse_concepts(prompts_text)
    prompts = concept_prompts(concepts, templates, extra_prompts)
    keep_prompts = [template.format(k) for k in keep for template in templates]
    concept_tokens = (concept_token_positions(clip, family, concepts, templates, extra_prompts)
                      if settings.localise_weight > 0 else {})

    training = model.clone()
    adapters: dict[str, _SwitchableLoRA] = {}
    progress = comfy.utils.ProgressBar(settings.iterations)
    losses: list[float] = []

    def on_iteration(_i: int, _loss: float) -> None:
        progress.update(1)
        comfy.model_management.throw_exception_if_processing_interrupted()

    def train(model_wrap, schedule, extra_args, noise):
        _replace_inference_tensors(training.model.diffusion_model)
        denoiser = _ComfyDenoiser(model_wrap, extra_args, noise, schedule, list(adapters.values()), concept_tokens)
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(_copy_activation, _unpack):
            losses.extend(unlearn(denoiser, parameters, prompts, keep_prompts, schedule.float(), settings,
                                  on_iteration))

    # ComfyUI runs nodes in inference mode; everything autograd touches is made outside it (see
    # _replace_inference_tensors for the model's own weights).
    with torch.inference_mode(False):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)                 # the LoRA's initialisation, without touching the global RNG
            for key in keys:
                layer = comfy.utils.get_attr(training.model, key.rsplit(".", 1)[0])
                gain = wrapper_gain(layer)
                if abs(gain) < 1e-6:
                    raise ValueError(
                        f"This model's layers ({type(layer).__module__}.{type(layer).__qualname__}, e.g. {key}) do not "
                        "apply ComfyUI's trainable weight wrappers, so a LoRA cannot be trained on them (ComfyUI-GGUF's "
                        "quantized layers are such). Unlearn on the fp16, bf16 or fp8 checkpoint of the same model and "
                        "save the result with Save Erasure as LoRA; that LoRA then loads onto the GGUF model.")
                adapters[key] = _SwitchableLoRA(layer.weight, rank, gain)
                training.add_weight_wrapper(key, adapters[key])
        parameters = [p for adapter in adapters.values() for p in adapter.lora.parameters() if p.requires_grad]
        with torch.no_grad():
            conditionings = {_cond_name(p): clip.encode_from_tokens_scheduled(clip.tokenize(p))
                             for p in dict.fromkeys(["", *prompts, *keep_prompts])}
        latent = empty_latent(model, latent_size, latent_frames)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", SAMPLING_STEPS)
        guider = comfy.samplers.CFGGuider(training)
        guider.inner_set_conds(conditionings)
        try:
            with _FrozenBase(training.model):
                guider.sample(comfy.sample.prepare_noise(latent, seed), latent, _TrainingSampler(train), sigmas,
                              disable_pbar=True, seed=seed)
        finally:
            _remove_wrappers(training, adapters)
    edits = []
    for key, adapter in adapters.items():
        up, down = adapter.factors()
        change = float(torch.linalg.matrix_norm(up @ down) / effective_weight(model, key).norm().clamp_min(1e-30))
        edits.append(LayerEdit(key, up, down, change, float("nan"), None))
    recipe = {"method": METHOD, "family": family.name, "forget": "\n".join(concepts), "retain": "\n".join(keep),
              "templates": "\n".join(templates), "prompts": prompts_text.strip(), "eta": f"{eta:g}",
              "iterations": str(iterations), "learning_rate": f"{learning_rate:g}", "rank": str(rank),
              "preserve_weight": f"{preserve_weight:g}", "guidance": f"{guidance:g}", "layers": layers,
              "latent": f"{latent_size}x{latent_size}x{latent_frames}", "seed": str(seed),
              "localise_weight": f"{localise_weight:g}"}
    patched = patched_clone(model, edits, 1.0, recipe)
    report = _report(family.name, concepts, keep, prompts, edits, losses, settings, layers)
    return patched, report, loss_curve_image(losses)


def _replace_inference_tensors(module: torch.nn.Module) -> None:
    """ComfyUI runs nodes in inference mode, so a model loaded there holds inference tensors, which autograd cannot
    save for the backward pass (a GPU load copies them anyway; on the CPU they stay). Each such parameter or buffer
    is replaced once by an ordinary tensor with the same values: the model computes exactly as before."""
    with torch.inference_mode(False):
        for child in module.modules():
            for store in (child._parameters, child._buffers):
                for name, tensor in store.items():
                    if tensor is not None and tensor.is_inference():
                        copy = tensor.clone()
                        store[name] = torch.nn.Parameter(copy, requires_grad=False) if name in child._parameters else copy


def _copy_activation(tensor: torch.Tensor) -> torch.Tensor:
    """What autograd keeps of an activation for the backward pass: a copy. Some of ComfyUI's models update their
    residual streams in place (Flux: ``img += ...``), which would invalidate the saved tensor; weights (leaves) are
    kept as they are."""
    return tensor.clone() if tensor.grad_fn is not None else tensor


def _unpack(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _remove_wrappers(training, adapters: dict[str, _SwitchableLoRA]) -> None:
    """Take the adapters off the shared modules (ComfyUI leaves weight wrappers in place after a full load, and
    the modules are the input MODEL's too)."""
    for key in adapters:
        training.weight_wrapper_patches.pop(key, None)
        module = comfy.utils.get_attr(training.model, key.removesuffix(".weight"))
        functions = getattr(module, "weight_function", None)
        if functions:
            module.weight_function = [f for f in functions if not isinstance(f, _SwitchableLoRA)]


def _report(family: str, concepts, keep, prompts, edits: list[LayerEdit], losses: list[float],
            settings: UnlearnSettings, layers: str) -> str:
    window = max(1, len(losses) // 10)
    first, last = float(np.mean(losses[:window])), float(np.mean(losses[-window:]))
    changes = [e.weight_change for e in edits]
    return "\n".join([
        f"{METHOD} on {family}: unlearned {', '.join(concepts)}; "
        f"kept {', '.join(keep) if keep else 'the empty prompt'}",
        f"{len(prompts)} concept prompt(s), eta {settings.eta:g}, {settings.iterations} iterations at learning rate "
        f"{settings.learning_rate:g}, keep weight {settings.preserve_weight:g}, localisation weight "
        f"{settings.localise_weight:g}, seed {settings.seed}",
        f"LoRA on {len(edits)} {layers} (rank {edits[0].up.shape[1]}); patches hold "
        f"{sum(e.numel for e in edits) * 4 / 2**20:.2f} MiB",
        f"Loss (mean of the first and last tenth): {first:.4g} -> {last:.4g}",
        f"Weight change: mean {np.mean(changes):.2%}, max {max(changes):.2%}",
    ])


def loss_curve_image(losses: list[float], width: int = 640, height: int = 320) -> torch.Tensor:
    """The loss per iteration (and its running mean) as a ComfyUI IMAGE ``[1, H, W, 3]``."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = 56, 24, width - 16, height - 32
    draw.rectangle((left, top, right, bottom), outline=(40, 40, 40))
    draw.text((left, 6), "unlearning loss per iteration (grey) and running mean (red)", fill=(40, 40, 40))
    values = np.asarray(losses, dtype=np.float64)
    if values.size:
        high = float(values.max()) or 1.0
        draw.text((4, top), f"{high:.3g}", fill=(40, 40, 40))
        draw.text((4, bottom - 10), "0", fill=(40, 40, 40))
        draw.text((right - 60, bottom + 8), f"{values.size} it", fill=(40, 40, 40))
        window = max(1, values.size // 20)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")

        def points(series, offset=0):
            span = max(1, values.size - 1)
            return [(left + (i + offset) / span * (right - left), bottom - v / high * (bottom - top))
                    for i, v in enumerate(series)]
        if values.size > 1:
            draw.line(points(values), fill=(170, 170, 170), width=1)
        if smooth.size > 1:
            draw.line(points(smooth, window - 1), fill=(200, 40, 40), width=2)
    return image_tensor(image)
