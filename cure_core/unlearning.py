"""T2VUnlearning's negatively guided fine-tuning (Ye et al. 2025, arXiv 2505.17550), model-agnostic.

The base model stays frozen; an adapter is trained so that the adapted model's prediction for the concept
prompt ``c`` matches the base model's prediction *guided away* from it,
``v⁻ = v(x_t, ∅) − η (v(x_t, c) − v(x_t, ∅))``, at states ``x_t`` the current adapted model reaches when it
samples ``c`` from noise and stops at a random step (the ESD recipe: no data set). Prompts to keep are held to
the base model's prediction at the same states; without any, the empty prompt is (the unconditional prediction,
which every guided picture starts from: held, it keeps the adapter from drifting on everything else). With
localisation (the paper's), the adapter's change to the concept prompt's prediction is also held to zero outside
the concept's region: where the frozen model's cross-attention to the concept's tokens stays below a tenth of its
range (:func:`concept_mask`).

The target is linear in the prediction, so it is the same whether a model predicts noise (eps), velocity (flow)
or the clean sample: this module works on clean-sample (``x0``) predictions, as ComfyUI's models return them,
and divides the error by ``σ`` so that the loss is the noise/velocity-space MSE the paper writes
(``x0 = x_t − σ ε`` for eps models, ``x0 = x_t − σ v`` for flow models). Nothing here imports ComfyUI: the
denoiser is a :class:`Denoiser`, implemented for ComfyUI models in ``comfy_glue.unlearning``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

METHOD = "T2VUnlearning (fine-tune)"       # the recipe's method name, and the benchmark's
# Ours, measured on the miniature model (docs/method.md): η 1 at learning rate 1e-2 for 200 iterations erased every
# concept tried (the paper's η, about 3 for nudity and 5 for faces, at 3e-3 for 300 iterations left a star in half).
DEFAULT_ETA = 1.0
DEFAULT_LEARNING_RATE = 1e-2
DEFAULT_ITERATIONS = 200
MAX_ITERATIONS = 10_000
UNCONDITIONAL = ""          # the prompt held to the frozen model's prediction when no keep concept is given
# The paper's localisation: the concept tokens' cross-attention, min-max normalised per frame, is the concept's region
# where it reaches this share of its range; the adapter's change outside it is penalised.
MASK_THRESHOLD = 0.1
DEFAULT_LOCALISE_WEIGHT = 0.0
# What the concept prompts are written through, besides the concept alone ("{}").
DEFAULT_TEMPLATES = ("{}", "a photo of {}", "a picture of {}", "an image showing {}", "a detailed scene with {}",
                     "{}, high quality")


class Denoiser(Protocol):
    """A diffusion model seen as the trainer needs it."""

    def predict(self, x: torch.Tensor, sigma: torch.Tensor, prompts: Sequence[str], adapted: bool) -> list[torch.Tensor]:
        """The clean-sample predictions for each of ``prompts`` at noise level ``sigma``, with or without the
        adapter (one batched call where the model allows)."""

    def concept_attention(self, x: torch.Tensor, sigma: torch.Tensor, prompt: str) -> torch.Tensor | None:
        """The frozen model's cross-attention to the prompt's concept tokens on the latent grid (averaged over heads,
        tokens and layers; shaped to broadcast against ``x``, one map per latent frame), or None where the prompt
        does not contain a concept the denoiser can locate."""

    def start(self, generator: torch.Generator) -> torch.Tensor:
        """A pure-noise state at the schedule's first sigma, drawn from ``generator``."""


@dataclass(frozen=True)
class UnlearnSettings:
    eta: float = DEFAULT_ETA            # how far the target is pushed away from the concept
    iterations: int = DEFAULT_ITERATIONS
    learning_rate: float = DEFAULT_LEARNING_RATE
    preserve_weight: float = 1.0        # weight of the keep prompts' loss (the empty prompt's without any)
    guidance: float = 5.0               # CFG scale of the sampling that produces x_t
    localise_weight: float = DEFAULT_LOCALISE_WEIGHT     # the adapter's change outside the concept's mask
    grad_clip: float = 1.0              # the paper's gradient clipping
    seed: int = 0

    def checked(self) -> "UnlearnSettings":
        """The settings, or a ValueError that says which one is out of range."""
        for name, low, high in (("eta", 0.0, 100.0), ("learning_rate", 1e-8, 1.0), ("preserve_weight", 0.0, 1e4),
                                ("localise_weight", 0.0, 1e4), ("guidance", 1.0, 100.0), ("grad_clip", 1e-6, 1e6)):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
                raise ValueError(f"{name} must be a number from {low:g} to {high:g} (got {value!r}).")
        if not (isinstance(self.iterations, int) and 1 <= self.iterations <= MAX_ITERATIONS):
            raise ValueError(f"iterations must be a whole number from 1 to {MAX_ITERATIONS} (got {self.iterations!r}).")
        return self


def negatively_guided_target(uncond: torch.Tensor, cond: torch.Tensor, eta: float) -> torch.Tensor:
    """``v⁻ = v(∅) − η (v(c) − v(∅))``: the unconditional prediction pushed away from the concept."""
    return uncond - eta * (cond - uncond)


def concept_mask(attention: torch.Tensor, threshold: float = MASK_THRESHOLD) -> torch.Tensor:
    """1 where the concept is (its attention at least ``threshold`` of the way from each frame's minimum to its
    maximum), 0 elsewhere; the frames are the last two dimensions' maps. A flat map (no region stands out) is all 1:
    nothing is held."""
    low = attention.amin(dim=(-2, -1), keepdim=True)
    span = attention.amax(dim=(-2, -1), keepdim=True) - low
    normalised = (attention - low) / span.clamp_min(1e-12)
    return torch.where(span > 1e-12, (normalised >= threshold).to(attention.dtype), torch.ones_like(attention))


def concept_prompts(concepts: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES,
                    extra: Sequence[str] = ()) -> list[str]:
    """The prompts the concept is unlearned on: every concept through every template, then the user's own
    prompts (the paper rewrites prompts with an LLM so that long prompts are covered; these stand in)."""
    prompts = [template.format(concept) for concept in concepts for template in templates]
    return list(dict.fromkeys([*prompts, *extra]))


def _sample_to(denoiser: Denoiser, sigmas: torch.Tensor, stop: int, prompt: str, guidance: float,
               generator: torch.Generator) -> torch.Tensor:
    """Euler steps of the adapted model (CFG on ``prompt`` against the empty prompt) from noise down to
    ``sigmas[stop]``."""
    x = denoiser.start(generator)
    for i in range(stop):
        sigma, following = sigmas[i], sigmas[i + 1]
        if guidance == 1.0:
            denoised, = denoiser.predict(x, sigma, [prompt], adapted=True)
        else:
            cond, uncond = denoiser.predict(x, sigma, [prompt, ""], adapted=True)
            denoised = uncond + guidance * (cond - uncond)
        x = x + (x - denoised) / sigma * (following - sigma)
    return x


def _scaled_mse(prediction: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The noise/velocity-space MSE of two clean-sample predictions at ``sigma``."""
    return ((prediction - target) / sigma).square().mean()


def unlearn(denoiser: Denoiser, parameters: Sequence[torch.nn.Parameter], prompts: Sequence[str],
            keep: Sequence[str], sigmas: torch.Tensor, settings: UnlearnSettings,
            on_iteration: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``parameters`` (the adapter's, read by ``denoiser`` when ``adapted``) and return the loss per iteration.

    ``sigmas`` is the sampling schedule (descending, the last one 0); training happens at one of its non-zero
    noise levels per iteration, drawn uniformly. ``on_iteration(i, loss)`` is called after each step (progress,
    cancellation: an exception raised there stops training with the parameters as they are)."""
    settings = settings.checked()
    if not prompts:
        raise ValueError("No concept prompts to unlearn.")
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.Adam(parameters, lr=settings.learning_rate)
    levels = int((sigmas > 0).sum())
    held = list(keep) or [UNCONDITIONAL]
    losses = []
    for i in range(settings.iterations):
        prompt = prompts[int(torch.randint(len(prompts), (1,), generator=generator))]
        stop = int(torch.randint(levels, (1,), generator=generator))
        sigma = sigmas[stop]
        with torch.no_grad():
            x = _sample_to(denoiser, sigmas, stop, prompt, settings.guidance, generator)
            kept = [held[i % len(held)]] if settings.preserve_weight > 0 else []
            frozen_prompts = list(dict.fromkeys([UNCONDITIONAL, prompt, *kept]))    # "" held: drawn once
            frozen = dict(zip(frozen_prompts, denoiser.predict(x, sigma, frozen_prompts, adapted=False)))
            target = negatively_guided_target(frozen[UNCONDITIONAL], frozen[prompt], settings.eta)
            cond, reference = frozen[prompt], [frozen[p] for p in kept]
        prediction, *kept_prediction = denoiser.predict(x, sigma, [prompt, *kept], adapted=True)
        loss = _scaled_mse(prediction, target, sigma)
        if settings.localise_weight > 0:
            with torch.no_grad():
                attention = denoiser.concept_attention(x, sigma, prompt)
            if attention is not None:   # the adapter's change outside the concept's region, held to zero
                outside = 1.0 - concept_mask(attention)
                loss = loss + settings.localise_weight * _scaled_mse(outside * prediction, outside * cond, sigma)
        if kept:
            loss = loss + settings.preserve_weight * _scaled_mse(kept_prediction[0], reference[0], sigma)
        value = float(loss.detach())
        if not math.isfinite(value):            # before the step: the adapter is not filled with NaN
            raise ValueError(f"The loss became {value} at iteration {i + 1}: lower learning_rate or eta.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, settings.grad_clip)
        optimizer.step()
        losses.append(value)
        if on_iteration is not None:
            on_iteration(i, value)
    return losses
