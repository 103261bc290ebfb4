"""Train the miniature video model (``models/miniature_video_world.safetensors``) from scratch.

1. Train Wan 2.1's video autoencoder (8 base channels) on clips of ``testbed.videoworld`` rendered on
   the fly, then map its latents, channel by channel, onto the statistics Wan 2.1's latent format
   expects (``comfy.latent_formats.Wan21``: the model then sees unit-variance latents), exactly (the
   1×1×1 convolutions around the latent absorb the affine map).
2. Pretrain the umT5-style text encoder so that a linear probe on the mean of its rows names the
   values the prompt asks for (a stand-in for umT5's pretraining: synonyms land on the same
   features). The probe is dropped; the encoder stays frozen afterwards, as Wan keeps umT5 frozen.
3. Train the DiT with Wan's flow-matching objective (velocity ``noise − x0`` at
   ``x_t = (1 − σ) x0 + σ noise``, timestep ``1000 σ``), σ drawn half uniformly and half through Wan's
   shift of 8 (where its sampler spends its steps), on the autoencoder's latents of a fixed set of
   clips; prompts name a random subset of the clip's attributes, 10 % are empty (for CFG). The text
   rows are padded to 512 with zeros, as ComfyUI's Wan encoder gives them.
4. Write one fp16 ``.safetensors`` (DiT, text encoder with its vocabulary, autoencoder) with the recipe
   in its metadata.

    .venv/bin/python scripts/train_miniature_video.py [--device cuda]

Seeded: the same command on the same machine gives the same file. ``--checkpoints DIR`` keeps each
finished phase (autoencoder, latents, text encoder) and the autoencoder's and the DiT's whole state every
``--checkpoint-every`` steps in DIR; the same command again picks up where it stopped and ends with the
same file as an uninterrupted run. ``--resume-from FILE`` instead goes on training the DiT of an earlier model file
(its autoencoder and text encoder are kept) for ``--steps`` more steps.
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
from scripts.training import (LoopCheckpoint, WeightAverage, add_run_arguments, optimiser_step,  # noqa: E402
                              save_atomically, start_run, write_model_file)  # noqa: E402

TEXT_LENGTH = 512               # ComfyUI's umT5 tokenizer pads every prompt to this many rows


def cached(path: Path | None, make, log):
    """``make()``, or what an earlier run of the same command saved at ``path`` (then saved there)."""
    if path is not None and path.is_file():
        log(f"picked up {path}")
        return torch.load(path, weights_only=False)
    value = make()
    if path is not None:
        save_atomically(value, path)
    return value


def clip_batch(scenes, frames: int) -> torch.Tensor:
    """Rendered clips as ``(B, 3, T, H, W)`` in [-1, 1] (the autoencoder's layout)."""
    from testbed.videoworld.clips import render_clip
    clips = np.stack([render_clip(scene, frames) for scene in scenes])
    return torch.from_numpy(clips).permute(0, 4, 1, 2, 3).contiguous() * 2 - 1


def initial_autoencoder(seed: int) -> torch.nn.Module:
    """Wan's autoencoder with seeded fan-in-scaled weights (ComfyUI's layers start uninitialised) and its
    RMS norms' scales (``gamma``, shaped to broadcast over frames and pixels) at one."""
    autoencoder = pack_module("testbed.miniature_video").build_autoencoder()
    pack_module("testbed.tiny_models").randomize(autoencoder, seed)
    with torch.no_grad():
        for name, parameter in autoencoder.named_parameters():
            if name.endswith("gamma"):
                parameter.fill_(1.0)
    return autoencoder


def train_autoencoder(steps: int, batch: int, frames: int, device: str, seed: int, log,
                      lr: float = 1e-3, foreground_weight: float = 4.0, checkpoint: Path | None = None,
                      checkpoint_every: int = 500) -> torch.nn.Module:
    """Wan's autoencoder on clips rendered on the fly; with ``checkpoint``, resumable (see ``LoopCheckpoint``)."""
    from testbed.videoworld.clips import random_clip_scene
    torch.manual_seed(seed)
    autoencoder = initial_autoencoder(seed).to(device).train()
    parameters = list(autoencoder.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.05)
    rng = random.Random(seed)
    saved = LoopCheckpoint(checkpoint, checkpoint_every,
                           {"autoencoder": autoencoder, "optimiser": optimiser, "schedule": schedule}, rng)
    started = time.time()
    for step in range(saved.resume(log), steps):
        saved.step(step)
        x = clip_batch([random_clip_scene(rng) for _ in range(batch)], frames).to(device)
        z = autoencoder.encode(x)
        noisy = z + 0.05 * z.detach().std() * torch.randn_like(z)      # a decoder that tolerates sampling error
        reconstruction = autoencoder.decode(noisy)
        # The shape covers a tenth of the frame: its pixels weigh more, or the background alone is learnt first.
        # (A clip's corner is always background: the shape stays a pixel inside the frame.)
        shape = ((x - x[..., :1, :1]).abs().sum(dim=1, keepdim=True) > 0.01).float()
        weight = 1 + foreground_weight * shape
        error = reconstruction - x
        loss = (weight * (error.abs() + error.pow(2))).mean() / weight.mean() + 1e-4 * z.pow(2).mean()
        optimiser_step(loss, parameters, optimiser, schedule)
        if step % 100 == 0 or step == steps - 1:
            log(f"autoencoder step {step}: loss {loss.item():.4f} ({time.time() - started:.0f} s)")
    return autoencoder.eval()


@torch.no_grad()
def encode_all(autoencoder: torch.nn.Module, scenes, frames: int, device: str, chunk: int = 32) -> torch.Tensor:
    return torch.cat([autoencoder.encode(clip_batch(scenes[i:i + chunk], frames).to(device)).cpu()
                      for i in range(0, len(scenes), chunk)])


@torch.no_grad()
def normalise_latents(autoencoder: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Map each latent channel onto Wan 2.1's mean and std (``latent_formats.Wan21``) by folding the affine
    map into the encoder's last 1×1×1 convolution and its inverse into the decoder's first; returns the
    latents the changed encoder now gives (the same map applied)."""
    fmt = pack_module("testbed.miniature_video").latent_format()
    target_mean, target_std = fmt.latents_mean.flatten(), fmt.latents_std.flatten()
    mean = latents.mean(dim=(0, 2, 3, 4))
    std = latents.std(dim=(0, 2, 3, 4))
    scale = target_std / std
    shift = target_mean - scale * mean
    channels = len(scale)
    encoder_out, decoder_in = autoencoder.conv1, autoencoder.conv2       # CausalConv3d with 1×1×1 kernels
    encoder_out.weight[:channels] *= scale.view(-1, 1, 1, 1, 1).to(encoder_out.weight)
    encoder_out.bias[:channels] = encoder_out.bias[:channels] * scale.to(encoder_out.bias) + shift.to(encoder_out.bias)
    # decoder_in(z) must equal the old decoder_in((z - shift) / scale)
    weight = decoder_in.weight.clone()
    decoder_in.weight.copy_(weight / scale.view(1, -1, 1, 1, 1).to(weight))
    decoder_in.bias.sub_((weight[:, :, 0, 0, 0] * (shift / scale).to(weight)[None]).sum(dim=1))
    return latents * scale.view(1, -1, 1, 1, 1) + shift.view(1, -1, 1, 1, 1)


class PromptRows:
    """Tokenizes through ComfyUI's Wan tokenizer (cached per prompt) and returns each prompt's tokens up
    to and including its end token: the encoder's rows for those are the same with or without the
    padding (the attention mask hides it and ComfyUI zeroes the padded rows)."""

    def __init__(self, clip):
        self.clip = clip

    @functools.lru_cache(maxsize=200_000)
    def __call__(self, prompt: str) -> tuple[int, ...]:
        pairs = self.clip.tokenizer.tokenize_with_weights(prompt)["umt5xxl"][0]
        tokens = [token for token, *_ in pairs]
        return tuple(tokens[:tokens.index(1) + 1])           # eos is 1 in umT5's layout

    def batch(self, prompts: list[str]) -> list[list[int]]:
        rows = [list(self(p)) for p in prompts]
        width = max(len(r) for r in rows)
        return [r + [0] * (width - len(r)) for r in rows]


def encode_rows(text_model, rows: list[list[int]], length: int = TEXT_LENGTH) -> torch.Tensor:
    """The encoder's rows for the token rows, zero-padded to ``length`` as ComfyUI's Wan encoder gives them."""
    context = text_model.forward(rows)[0]
    return torch.nn.functional.pad(context, (0, 0, 0, length - context.shape[1]))


def pretrain_text_encoder(steps: int, batch: int, device: str, seed: int, spiece_model: bytes, log):
    """The text encoder, trained so that a linear probe on the mean of a prompt's rows names the values
    it asks for (class 0: the attribute is not named); returns ``(clip, text_model, rows)``."""
    from testbed.videoworld.clips import ATTRIBUTES, VOCABULARY, random_clip_scene, random_named_prompt
    mini = pack_module("testbed.miniature_video")
    torch.manual_seed(seed)
    clip = mini.build_clip(spiece_model)
    text_model = mini.text_model(clip)
    pack_module("testbed.tiny_models").randomize(text_model, seed)
    text_model.to(device).train()
    for p in text_model.parameters():
        p.requires_grad_(True)
    width = mini.TEXT_ENCODER_CONFIG["d_model"]
    sizes = [len(VOCABULARY[a]) + 1 for a in ATTRIBUTES]
    probe = torch.nn.Linear(width, sum(sizes)).to(device)
    index = {a: {v: i + 1 for i, v in enumerate(VOCABULARY[a])} for a in ATTRIBUTES}
    rows = PromptRows(clip)
    parameters = [*text_model.parameters(), *probe.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    rng = random.Random(seed)
    with mini.differentiable_text_encoder(text_model):
        for step in range(steps):
            prompts, labels = [], []
            for _ in range(batch):
                prompt, named = random_named_prompt(rng, random_clip_scene(rng))
                if rng.random() < 0.1:
                    prompt, named = "", {}
                prompts.append(prompt)
                labels.append([index[a][named[a]] if a in named else 0 for a in ATTRIBUTES])
            token_rows = rows.batch(prompts)
            context = text_model.forward(token_rows)[0]
            mask = (context.abs().sum(-1, keepdim=True) > 0).float()          # ComfyUI zeroes the padding's rows
            pooled = (context * mask).sum(1) / mask.sum(1).clamp(min=1)
            logits = probe(pooled).split(sizes, dim=-1)
            targets = torch.tensor(labels, device=device)
            loss = sum(torch.nn.functional.cross_entropy(l, targets[:, i]) for i, l in enumerate(logits))
            optimiser_step(loss, parameters, optimiser, schedule, clip_norm=None)
            if step % 200 == 0 or step == steps - 1:
                accuracy = torch.stack([l.argmax(-1) == targets[:, i] for i, l in enumerate(logits)]).float().mean()
                log(f"text encoder step {step}: loss {loss.item():.4f}, probe accuracy {100 * accuracy.item():.1f} %")
    text_model.eval()
    for p in text_model.parameters():
        p.requires_grad_(False)
    return clip, text_model, rows


def sample_sigmas(count: int, shift: float, generator: torch.Generator) -> torch.Tensor:
    """Half uniform in (0, 1), half through Wan's shift (``shift u / (1 + (shift − 1) u)``)."""
    u = torch.rand(count, generator=generator).clamp(1e-3, 1 - 1e-3)
    shifted = shift * u / (1 + (shift - 1) * u)
    return torch.where(torch.arange(count) % 2 == 0, u, shifted)


def train_dit(scenes, latents: torch.Tensor, text_model, rows: PromptRows, steps: int, batch: int, device: str,
              seed: int, log, lr: float = 5e-4, dit_state: dict | None = None, checkpoint: Path | None = None,
              checkpoint_every: int = 500):
    """The DiT, trained from scratch or on from ``dit_state``, on ``latents`` (raw autoencoder latents); with
    ``checkpoint``, resumable (see ``LoopCheckpoint``)."""
    from testbed.videoworld.clips import random_prompt
    mini = pack_module("testbed.miniature_video")
    torch.manual_seed(seed)
    base = mini.build_dit()
    dit = base.diffusion_model.to(device)
    if dit_state is None:
        pack_module("testbed.tiny_models").randomize(dit, seed)
        with torch.no_grad():               # zero-init the output layer: training starts from "predict zero"
            dit.head.head.weight.zero_()
            dit.head.head.bias.zero_()
    else:
        dit.load_state_dict(dit_state)
    dit.train()
    for p in dit.parameters():
        p.requires_grad_(True)
    sampling = base.model_sampling
    shift = float(sampling.shift)
    x_all = base.latent_format.process_in(latents)
    parameters = list(dit.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.03)
    average = WeightAverage(parameters)
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    saved = LoopCheckpoint(checkpoint, checkpoint_every, {"dit": dit, "optimiser": optimiser, "schedule": schedule,
                                                          "average": average}, rng, generator)
    started = time.time()
    running = None
    for step in range(saved.resume(log), steps):
        saved.step(step)
        index = torch.randint(len(latents), (batch,), generator=generator)
        prompts = ["" if rng.random() < 0.1 else random_prompt(rng, scenes[i]) for i in index.tolist()]
        with torch.no_grad():
            context = encode_rows(text_model, rows.batch(prompts))
        x0 = x_all[index].to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        sigma = sample_sigmas(batch, shift, generator).to(device)
        s = sigma.view(-1, 1, 1, 1, 1)
        x_t = (1 - s) * x0 + s * noise                                     # ComfyUI's CONST noise_scaling
        predicted = dit(x_t, sampling.timestep(sigma).float(), context)
        loss = (predicted - (noise - x0)).pow(2).mean()
        optimiser_step(loss, parameters, optimiser, schedule)
        average.update(step)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 200 == 0 or step == steps - 1:
            log(f"DiT step {step}: loss {running:.4f} ({time.time() - started:.0f} s)")
    average.copy_to_model()
    return dit.eval()


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="default: the pack's models/miniature_video_world.safetensors")
    parser.add_argument("--clips", type=int, default=12_000, help="clips the DiT is trained on")
    parser.add_argument("--autoencoder-steps", type=int, default=3000)
    parser.add_argument("--autoencoder-batch", type=int, default=3)
    parser.add_argument("--text-steps", type=int, default=600, help="text-encoder pretraining steps")
    parser.add_argument("--text-batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8000, help="DiT steps")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4, help="the DiT's peak learning rate (one-cycle schedule)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume-from", type=Path, default=None,
                        help="go on training the DiT of an earlier model file (its autoencoder and text encoder are "
                             "kept as they are)")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="a folder for each finished phase and the DiT's state; the same command again goes on "
                             "from there")
    parser.add_argument("--checkpoint-every", type=int, default=500,
                        help="steps between the autoencoder's and the DiT's checkpoints")
    add_run_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = argument_parser().parse_args(argv)
    log = start_run(args.threads, args.device)
    mini = pack_module("testbed.miniature_video")
    from testbed.videoworld.clips import FRAMES, random_clip_scene
    from testbed.videoworld.detector import detect_clip
    out = args.out or mini.MODEL_FILE
    started = time.time()

    rng = random.Random(args.seed)
    scenes = [random_clip_scene(rng) for _ in range(args.clips)]
    checkpoints = args.checkpoints
    if checkpoints is not None:
        checkpoints.mkdir(parents=True, exist_ok=True)

    def phase(name: str) -> Path | None:
        return None if checkpoints is None else checkpoints / name

    resumed, earlier_recipe = None, None
    if args.resume_from:
        resumed, metadata = mini.read_model_file(args.resume_from)
        earlier_recipe = metadata["recipe"]
        autoencoder = mini.build_autoencoder()
        autoencoder.load_state_dict(resumed["vae"])
        autoencoder = autoencoder.to(args.device).eval()
        latents = encode_all(autoencoder, scenes, FRAMES, args.device)
    else:
        def autoencoder_and_latents():
            trained = train_autoencoder(args.autoencoder_steps, args.autoencoder_batch, FRAMES, args.device,
                                        args.seed + 1, log, checkpoint=phase("autoencoder_training.pt"),
                                        checkpoint_every=args.checkpoint_every)
            normalised = normalise_latents(trained, encode_all(trained, scenes, FRAMES, args.device))
            return {"autoencoder": trained.state_dict(), "latents": normalised}
        saved = cached(phase("autoencoder.pt"), autoencoder_and_latents, log)
        autoencoder = mini.build_autoencoder()
        autoencoder.load_state_dict(saved["autoencoder"])
        autoencoder = autoencoder.to(args.device).eval()
        latents = saved["latents"]
    log(f"encoded {len(scenes)} clips to latents {tuple(latents.shape[1:])}")
    check = scenes[:200]
    with torch.no_grad():
        decoded = torch.cat([autoencoder.decode(latents[i:i + 20].to(args.device)).cpu() for i in range(0, len(check), 20)])
    originals = clip_batch(check, FRAMES)
    reconstruction = (decoded - originals).abs().mean().item() / 2
    clips = ((decoded.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1).numpy()
    from testbed.videoworld.clips import ATTRIBUTES
    kept = np.mean([detect_clip(c)[a] == s.value(a) for c, s in zip(clips, check) for a in ATTRIBUTES])
    log(f"autoencoder: mean abs reconstruction error {reconstruction:.4f} (0..1 scale), detector agrees with the "
        f"clip on {100 * kept:.1f} % of attributes of reconstructions")
    if resumed:
        clip = mini.load_clip(resumed["clip"])
        text_model = mini.text_model(clip).to(args.device).eval()
        rows = PromptRows(clip)
        spiece_model = resumed["clip"]["spiece_model"]
    else:
        spiece_model = mini.world_spiece_model()

        def text_encoder():
            return pretrain_text_encoder(args.text_steps, args.text_batch, args.device, args.seed + 11, spiece_model,
                                         log)[1].state_dict()
        clip = mini.build_clip(spiece_model)
        text_model = mini.text_model(clip)
        text_model.load_state_dict(cached(phase("text_encoder.pt"), text_encoder, log))
        text_model = text_model.to(args.device).eval().requires_grad_(False)
        rows = PromptRows(clip)
    dit = train_dit(scenes, latents, text_model, rows, args.steps, args.batch, args.device, args.seed + 10, log,
                    lr=args.lr, dit_state=resumed["model"] if resumed else None, checkpoint=phase("dit.pt"),
                    checkpoint_every=args.checkpoint_every)

    if isinstance(spiece_model, bytes):
        spiece_model = torch.frombuffer(bytearray(spiece_model), dtype=torch.uint8)
    parts = {"model": dit.state_dict(),
             "clip": {**{f"umt5xxl.{k}": v for k, v in text_model.state_dict().items()}, "spiece_model": spiece_model},
             "vae": autoencoder.state_dict()}
    recipe = {"clips": args.clips, "autoencoder_steps": 0 if resumed else args.autoencoder_steps,
              "autoencoder_batch": args.autoencoder_batch, "text_steps": 0 if resumed else args.text_steps,
              "text_batch": args.text_batch, "steps": args.steps, "batch": args.batch, "lr": args.lr,
              "seed": args.seed, "device": args.device, "resumed_from": earlier_recipe,
              "seconds": round(time.time() - started, 1), "autoencoder_error": round(reconstruction, 5),
              "autoencoder_detector_agreement": round(float(kept), 4)}
    write_model_file(out, parts, recipe, log)


if __name__ == "__main__":
    main()
