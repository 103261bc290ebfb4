"""Train the miniature-world model (``models/miniature_world.safetensors``) from scratch.

1. Render a fixed set of scenes of ``testbed.miniworld`` and train the small KL autoencoder on them,
   then rescale its latents so that SD1.x's latent scale (0.18215) brings them to unit variance.
2. Pretrain the text encoder to say which attribute values a prompt names (a linear probe per
   attribute on its end-of-text outputs, the rows every SD1.x cross-attention reads most): a small
   stand-in for CLIP's pretraining on captioned pictures, so that synonyms ("crimson", "scarlet")
   land on the same features as their canonical word, as they do in real CLIP. The probe is dropped.
3. Train the UNet with the text encoder frozen (as SD1.x keeps CLIP frozen), with SD1.x's own noise
   schedule and eps objective (min-SNR-5 weighted) and offset noise (see ``train_diffusion``), through
   ComfyUI's classes exactly as ComfyUI samples them; prompts name a random subset of the scene's
   attributes with random synonyms and templates, and 10 % are empty (for CFG).
4. Write one fp16 ``.safetensors`` (UNet, CLIP, VAE) with the recipe in its metadata.

The shipped file is this script with its defaults (about an hour on a 2-core CPU):

    .venv/bin/python scripts/train_miniature.py [--device cuda]

Seeded: the same command on the same machine gives the same file. ``--resume-from`` goes on training
the UNet of an earlier file.
"""
from __future__ import annotations

import argparse
import functools
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:      # appended: ComfyUI's own top-level `nodes` must win over the pack's folder
    sys.path.append(_REPO)
from scripts.comfy_env import pack_module  # noqa: E402
from scripts.training import WeightAverage, add_run_arguments, optimiser_step, start_run, write_model_file  # noqa: E402


def render_dataset(count: int, seed: int):
    from testbed.miniworld.scenes import random_scene, render
    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(count)]
    images = np.stack([render(s) for s in scenes])
    return scenes, torch.from_numpy(images).permute(0, 3, 1, 2).contiguous() * 2 - 1     # [-1, 1], NCHW


def train_autoencoder(images: torch.Tensor, steps: int, batch: int, device: str, log) -> torch.nn.Module:
    mini = pack_module("testbed.miniature")
    torch.manual_seed(1)
    autoencoder = mini.build_autoencoder()
    pack_module("testbed.tiny_models").randomize(autoencoder, 1)      # ComfyUI's layers start uninitialised
    autoencoder = autoencoder.to(device).train()
    optimiser = torch.optim.AdamW(autoencoder.parameters(), lr=2e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=2e-3, total_steps=steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(2)
    for step in range(steps):
        x = images[torch.randint(len(images), (batch,), generator=generator)].to(device)
        z = autoencoder.encode(x)
        noisy = z + 0.05 * z.detach().std() * torch.randn_like(z)      # a decoder that tolerates sampling error
        reconstruction = autoencoder.decode(noisy)
        loss = (reconstruction - x).abs().mean() + (reconstruction - x).pow(2).mean() + 1e-4 * z.pow(2).mean()
        optimiser_step(loss, list(autoencoder.parameters()), optimiser, schedule, clip_norm=None)
        if step % 100 == 0 or step == steps - 1:
            log(f"autoencoder step {step}: loss {loss.item():.4f}")
    return autoencoder.eval()


@torch.no_grad()
def normalise_latents(autoencoder: torch.nn.Module, images: torch.Tensor, scale_factor: float) -> float:
    """Scale the latent mean channels so that ``latent * scale_factor`` has unit variance (exact: the
    decoder's first layer is divided by the same factor). Returns the factor applied."""
    std = torch.cat([autoencoder.encode(images[i:i + 512]) for i in range(0, min(len(images), 4096), 512)]).std()
    factor = float(1.0 / (scale_factor * std))
    channels = autoencoder.quant_conv.weight.shape[0] // 2
    autoencoder.quant_conv.weight[:channels] *= factor
    autoencoder.quant_conv.bias[:channels] *= factor
    autoencoder.post_quant_conv.weight /= factor
    return factor


@torch.no_grad()
def encode_all(autoencoder: torch.nn.Module, images: torch.Tensor, device: str) -> torch.Tensor:
    return torch.cat([autoencoder.encode(images[i:i + 512].to(device)).cpu() for i in range(0, len(images), 512)])


class CachedTokenizer:
    """Tokenizes through ComfyUI's SD1 tokenizer, caching each distinct prompt."""

    def __init__(self, clip):
        self.clip = clip

    @functools.lru_cache(maxsize=200_000)
    def __call__(self, prompt: str) -> tuple[int, ...]:
        pairs = self.clip.tokenizer.tokenize_with_weights(prompt)["l"]
        if len(pairs) != 1:
            raise ValueError(f"prompt longer than one 77-token chunk: {prompt!r}")
        return tuple(token for token, *_ in pairs[0])


def pretrain_text_encoder(scenes, steps: int, batch: int, device: str, seed: int, log):
    """The text encoder, trained so that a linear probe on each end-of-text row names the values the
    prompt asks for (class 0: the attribute is not named); returns ``(clip, text_model, tokenizer)``."""
    from testbed.miniworld.scenes import ATTRIBUTES, VOCABULARY, random_prompt
    mini = pack_module("testbed.miniature")
    torch.manual_seed(seed)
    clip = mini.build_clip()
    text_model = clip.cond_stage_model.clip_l
    pack_module("testbed.tiny_models").randomize(text_model, seed)
    text_model.to(device).train()
    for p in text_model.parameters():
        p.requires_grad_(True)
    width = mini.TEXT_ENCODER_CONFIG["hidden_size"]
    sizes = [len(VOCABULARY[a]) + 1 for a in ATTRIBUTES]
    probe = torch.nn.Linear(width, sum(sizes)).to(device)
    index = {a: {v: i + 1 for i, v in enumerate(VOCABULARY[a])} for a in ATTRIBUTES}
    tokens = CachedTokenizer(clip)
    end_token = clip.tokenizer.clip_l.end_token
    parameters = [*text_model.parameters(), *probe.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    with mini.differentiable_text_encoder(text_model):
        rng = random.Random(seed)
        for step in range(steps):
            prompts, labels = [], []
            for scene in (scenes[rng.randrange(len(scenes))] for _ in range(batch)):
                prompt = "" if rng.random() < 0.1 else random_prompt(rng, scene)
                prompts.append(prompt)
                words = set(prompt.replace(",", " ").split())
                labels.append([index[a][scene.value(a)] if words & set(VOCABULARY[a][scene.value(a)]) else 0
                               for a in ATTRIBUTES])
            token_rows = [list(tokens(p)) for p in prompts]
            context, _ = text_model.forward(token_rows)
            ends = torch.tensor(token_rows, device=device) == end_token              # end-of-text and its padding
            logits = probe(context[ends]).split(sizes, dim=-1)
            targets = torch.tensor(labels, device=device).repeat_interleave(ends.sum(1), dim=0)
            loss = sum(torch.nn.functional.cross_entropy(l, targets[:, i]) for i, l in enumerate(logits))
            optimiser_step(loss, parameters, optimiser, schedule, clip_norm=None)
            if step % 200 == 0 or step == steps - 1:
                accuracy = torch.stack([l.argmax(-1) == targets[:, i] for i, l in enumerate(logits)]).float().mean()
                log(f"text encoder step {step}: loss {loss.item():.4f}, probe accuracy {100 * accuracy.item():.1f} %")
    text_model.eval()
    for p in text_model.parameters():
        p.requires_grad_(False)
    return clip, text_model, tokens


def train_diffusion(scenes, latents: torch.Tensor, text_model, tokens, steps: int, batch: int, device: str, seed: int,
                    log, lr: float = 1e-3, noise_offset: float = 0.0, unet_state: dict | None = None):
    """The UNet, trained from scratch or on from ``unet_state``. ``noise_offset`` adds a per-picture,
    per-channel constant to the training noise (offset noise): without it the starting noise's mean
    survives SD1.x's schedule, and the model takes the background (a picture's mean) from it instead
    of from the prompt."""
    from testbed.miniworld.scenes import random_prompt
    mini = pack_module("testbed.miniature")
    torch.manual_seed(seed)
    base = mini.build_unet()
    unet = base.diffusion_model.to(device)
    if unet_state is None:
        pack_module("testbed.tiny_models").randomize(unet, seed)
        with torch.no_grad():               # zero-init the output layer: training starts from "predict no noise"
            unet.out[-1].weight.zero_()
            unet.out[-1].bias.zero_()
    else:
        unet.load_state_dict(unet_state)
    unet.train()
    for p in unet.parameters():
        p.requires_grad_(True)
    sampling = base.model_sampling
    sigmas = sampling.sigmas.to(device)
    scale_factor = base.latent_format.scale_factor
    parameters = list(unet.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.03)
    average = WeightAverage(parameters)
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    started = time.time()
    running = None
    for step in range(steps):
        index = torch.randint(len(latents), (batch,), generator=generator)
        prompts = ["" if rng.random() < 0.1 else random_prompt(rng, scenes[i]) for i in index.tolist()]
        with torch.no_grad():
            context, _ = text_model.forward([list(tokens(p)) for p in prompts])
        x0 = latents[index].to(device) * scale_factor
        noise = torch.randn(x0.shape, generator=generator).to(device)
        if noise_offset:
            noise = noise + noise_offset * torch.randn((*x0.shape[:2], 1, 1), generator=generator).to(device)
        t = torch.randint(len(sigmas), (batch,), generator=generator).to(device)
        sigma = sigmas[t].view(-1, 1, 1, 1)
        x_in = (x0 + sigma * noise) / torch.sqrt(sigma ** 2 + 1)        # ComfyUI's EPS calculate_input
        predicted = unet(x_in, timesteps=sampling.timestep(sigmas[t]).float(), context=context)
        weight = torch.clamp(5.0 * sigma.flatten() ** 2, max=1.0)            # min-SNR-5: min(SNR, 5) / SNR
        loss = (weight * (predicted - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        optimiser_step(loss, parameters, optimiser, schedule)
        average.update(step)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 200 == 0 or step == steps - 1:
            log(f"diffusion step {step}: loss {running:.4f} ({time.time() - started:.0f} s)")
    average.copy_to_model()
    return unet.eval()


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="default: the pack's models/miniature_world.safetensors")
    parser.add_argument("--scenes", type=int, default=40_000)
    parser.add_argument("--autoencoder-steps", type=int, default=1000)
    parser.add_argument("--autoencoder-batch", type=int, default=16)
    parser.add_argument("--text-steps", type=int, default=400, help="text-encoder pretraining steps")
    parser.add_argument("--text-batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=9000, help="UNet steps")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3, help="the UNet's peak learning rate (one-cycle schedule)")
    parser.add_argument("--noise-offset", type=float, default=0.3,
                        help="std of the per-channel constant added to the training noise (offset noise)")
    parser.add_argument("--resume-from", type=Path, default=None,
                        help="go on training the UNet of an earlier model file (its autoencoder and text encoder are "
                             "kept as they are)")
    add_run_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = argument_parser().parse_args(argv)
    log = start_run(args.threads, args.device)
    mini = pack_module("testbed.miniature")
    out = args.out or mini.MODEL_FILE
    started = time.time()

    scenes, images = render_dataset(args.scenes, args.seed)
    log(f"rendered {len(scenes)} scenes")
    resumed, earlier_recipe = None, None
    if args.resume_from:
        resumed, metadata = mini.read_model_file(args.resume_from)
        earlier_recipe = metadata["recipe"]
        autoencoder = mini.build_autoencoder()
        autoencoder.load_state_dict(resumed["vae"])
        autoencoder = autoencoder.to(args.device).eval()
        factor = 1.0            # already rescaled
    else:
        autoencoder = train_autoencoder(images, args.autoencoder_steps, args.autoencoder_batch, args.device, log)
        factor = normalise_latents(autoencoder, images.to(args.device), mini.model_config().latent_format.scale_factor)
    latents = encode_all(autoencoder, images, args.device)
    with torch.no_grad():
        decoded = torch.cat([autoencoder.decode(latents[i:i + 512].to(args.device)).cpu() for i in range(0, min(len(latents), 2048), 512)])
    reconstruction = (decoded - images[:len(decoded)]).abs().mean().item() / 2
    from testbed.miniworld.detector import detect
    pictures = ((decoded.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    kept = np.mean([detect(p)[a] == s.value(a) for p, s in zip(pictures, scenes) for a in ("shape", "colour", "style", "background")])
    log(f"autoencoder: latent factor {factor:.3f}, mean abs reconstruction error {reconstruction:.4f} (0..1 scale), "
        f"detector agrees with the scene on {100 * kept:.1f} % of attributes of reconstructions")
    if resumed:
        clip = mini.load_clip(resumed["clip"])
        text_model = clip.cond_stage_model.clip_l.to(args.device).eval()
        tokens = CachedTokenizer(clip)
    else:
        clip, text_model, tokens = pretrain_text_encoder(scenes, args.text_steps, args.text_batch, args.device,
                                                         args.seed + 11, log)
    unet = train_diffusion(scenes, latents, text_model, tokens, args.steps, args.batch, args.device, args.seed + 10,
                           log, lr=args.lr, noise_offset=args.noise_offset,
                           unet_state=resumed["model"] if resumed else None)

    parts = {"model": unet.state_dict(), "clip": {f"clip_l.{k}": v for k, v in text_model.state_dict().items()},
             "vae": autoencoder.state_dict()}
    recipe = {"scenes": args.scenes, "autoencoder_steps": 0 if resumed else args.autoencoder_steps,
              "text_steps": 0 if resumed else args.text_steps, "text_batch": args.text_batch, "steps": args.steps,
              "batch": args.batch, "seed": args.seed, "device": args.device,
              "lr": args.lr, "noise_offset": args.noise_offset, "resumed_from": earlier_recipe,
              "seconds": round(time.time() - started, 1), "autoencoder_error": round(reconstruction, 5),
              "autoencoder_detector_agreement": round(float(kept), 4)}
    write_model_file(out, parts, recipe, log)


if __name__ == "__main__":
    main()
