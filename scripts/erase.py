"""Erase concepts from a checkpoint on disk, without the UI: ``cure-erase`` (or ``python scripts/erase.py``).

It loads the checkpoint with ComfyUI's own loaders (ComfyUI is used as a library: ``--comfyui DIR``,
default ``$COMFYUI_DIR``, ``.comfyui/ComfyUI`` or the ComfyUI this pack is installed in): an all-in-one
checkpoint as *Load Checkpoint* does, or a diffusion model with its text encoder files (``--text-encoder``,
``--clip-type``) as *Load Diffusion Model* and *Load CLIP* / *DualCLIPLoader* do. It applies exactly what the
**Erase Concepts (CURE)** node applies, and writes either the erased model file (every tensor and the
metadata of the input, the edited layers replaced, in the input's format: scaled fp8 stays scaled fp8) or,
with ``--lora``, the LoRA that the **Save Erasure as LoRA** node writes::

    cure-erase sd15.safetensors --forget "Van Gogh" --retain "Claude Monet" --output sd15_no_van_gogh.safetensors
    cure-erase flux1-dev-fp8_scaled.safetensors --text-encoder clip_l.safetensors --text-encoder t5xxl_fp16.safetensors \
        --clip-type flux --forget "Mickey Mouse" --kind object --output flux1-dev-fp8_scaled_no_mickey.safetensors
    cure-erase sd15.safetensors --forget "Mickey Mouse" --kind object --lora --output no_mickey_lora.safetensors
    cure-erase sd15.safetensors --preset "explicit content" --forget "lingerie" --output sd15_safe.safetensors
    cure-erase sd15.safetensors --erasure-file no_van_gogh.safetensors --output sd15_no_van_gogh.safetensors
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:      # appended: ComfyUI's own top-level `nodes` must win over the pack's
    sys.path.append(str(REPO))
from cure_core.concepts import CONCEPT_KINDS, TOKEN_SELECTIONS  # noqa: E402  (no ComfyUI import)
from cure_core.families import LAYER_CHOICES  # noqa: E402
from cure_core.presets import PRESET_NAMES, resolve_preset  # noqa: E402
from cure_core.spectral import COMBINATIONS  # noqa: E402
from scripts.comfy_env import load_pack, pack_module  # noqa: E402

LORA_DTYPES = ("fp16", "bf16", "fp32")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cure-erase", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="all-in-one checkpoint (.safetensors/.ckpt) of a supported family, "
                                                "or with --text-encoder a diffusion model file")
    p.add_argument("--text-encoder", action="append", default=[], type=Path, metavar="FILE",
                   help="a text encoder file, as Load CLIP / DualCLIPLoader / TripleCLIPLoader read them (repeat for "
                        "each): the checkpoint is then a diffusion model file, as Load Diffusion Model reads it")
    p.add_argument("--clip-type", default=None, metavar="TYPE",
                   help="with --text-encoder: the CLIP loaders' type (stable_diffusion, sd3, flux, wan, hidream, "
                        "qwen_image, ...)")
    p.add_argument("--output", "-o", type=Path, required=True, help="file to write (.safetensors)")
    p.add_argument("--lora", action="store_true", help="write the erasure as a LoRA file instead of a whole checkpoint")
    p.add_argument("--lora-dtype", choices=LORA_DTYPES, default="fp16", help="precision of the LoRA factors")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    what = p.add_argument_group("what to erase")
    what.add_argument("--preset", choices=PRESET_NAMES, default=None,
                      help="start from a curated concept preset (its concepts, templates, kind and α); --forget and "
                           "--retain add to it")
    what.add_argument("--erasure-file", type=Path, default=None,
                      help="apply an erasure saved by the Save Erasure node (no concepts are encoded)")
    what.add_argument("--any-precision", action="store_true",
                      help="with --erasure-file: accept the same checkpoint at another precision or format (Apply "
                           "Erasure File's base_check 'same checkpoint, any precision') instead of the exact weights")
    what.add_argument("--forget", action="append", default=[], metavar="CONCEPT",
                      help="a concept to remove (repeat the option for several)")
    what.add_argument("--retain", action="append", default=[], metavar="CONCEPT",
                      help="a concept to protect (repeatable)")
    what.add_argument("--kind", choices=CONCEPT_KINDS, default=None,
                      help="concept kind: templates and default α (default: style, or the preset's)")
    what.add_argument("--template", action="append", default=[], dest="templates", metavar="TEXT",
                      help="prompt template with {} for the concept (repeatable; default: the kind's)")
    what.add_argument("--alpha-forget", type=float, default=None, help="expansion of the forget span (0 = kind's)")
    what.add_argument("--alpha-retain", type=float, default=None, help="expansion of the retain span (0 = kind's)")
    what.add_argument("--strength", type=float, default=1.0, help="0 … 1: W' = W − strength · W P_dis")
    what.add_argument("--layers", choices=LAYER_CHOICES, default=LAYER_CHOICES[0], help="which text-reading layers")
    what.add_argument("--token-selection", choices=TOKEN_SELECTIONS, default=TOKEN_SELECTIONS[0],
                      help="which token embeddings span a concept")
    what.add_argument("--erase-pooled", action="store_true", help="also erase from the pooled text vector")
    what.add_argument("--combination", choices=COMBINATIONS, default=COMBINATIONS[0],
                      help="how several concepts make one edit: a spectrum per concept combined once (default), or "
                           "the paper's one spectrum over all their rows")
    what.add_argument("--robust-contexts", type=int, default=0, metavar="N",
                      help="robust mode: also read each forget concept with N ordinary words around it, so an extra "
                           "word in a prompt does not bring it back (0 = off; 12 as benchmarked; the automatic --alpha-forget "
                           "becomes 10)")
    comfy = p.add_argument_group("ComfyUI")
    comfy.add_argument("--comfyui", type=Path, default=None,
                       help="ComfyUI folder (with main.py); default $COMFYUI_DIR, .comfyui/ComfyUI, or the ComfyUI "
                            "whose custom_nodes/ holds this pack")
    comfy.add_argument("--cpu", action="store_true", help="compute on the CPU even when a GPU is there")
    return p


def recipe_from_args(args: argparse.Namespace) -> dict:
    """Keyword arguments of ``erase_concepts`` (the node's function) from the command line: the concepts
    given, or a preset with the concepts given added to it. Empty for ``--erasure-file``."""
    if args.any_precision and args.erasure_file is None:
        raise SystemExit("cure-erase: --any-precision is for --erasure-file: it says how the file's base weights "
                         "are checked.")
    if args.erasure_file is not None:
        if args.forget or args.retain or args.preset:
            raise SystemExit("cure-erase: --erasure-file already says what to erase: drop --forget, --retain "
                             "and --preset.")
        return {}
    forget, retain, kind, templates = args.forget, args.retain, args.kind or "style", args.templates
    alpha_forget, alpha_retain = args.alpha_forget, args.alpha_retain
    if args.preset:
        try:
            preset = resolve_preset(args.preset, "\n".join(args.forget), "\n".join(args.retain))
        except ValueError as error:
            raise SystemExit(f"cure-erase: {error}") from None
        forget, retain = preset.forget_concepts.splitlines(), preset.retain_concepts.splitlines()
        kind = args.kind or preset.concept_kind
        templates = templates or preset.templates.splitlines()
        alpha_forget = preset.alpha_forget if alpha_forget is None else alpha_forget
        alpha_retain = preset.alpha_retain if alpha_retain is None else alpha_retain
    if not forget:
        raise SystemExit("cure-erase: nothing to erase: give at least one --forget CONCEPT, a --preset or an "
                         "--erasure-file.")
    return {"forget_text": "\n".join(forget), "retain_text": "\n".join(retain), "kind": kind,
            "templates_text": "\n".join(templates), "alpha_forget": alpha_forget or 0.0,
            "alpha_retain": alpha_retain or 0.0, "strength": args.strength, "layers": args.layers,
            "token_selection": args.token_selection, "erase_pooled": args.erase_pooled,
            "combination": args.combination, "robust_contexts": args.robust_contexts}


def check_paths(args: argparse.Namespace) -> None:
    """Refuse before loading anything: a missing input, or an output that would replace a file."""
    if not args.checkpoint.is_file():
        raise SystemExit(f"cure-erase: no checkpoint at {args.checkpoint}.")
    for path in args.text_encoder:
        if not path.is_file():
            raise SystemExit(f"cure-erase: no text encoder file at {path}.")
    if bool(args.text_encoder) != bool(args.clip_type):
        raise SystemExit("cure-erase: a diffusion model file needs both --text-encoder FILE (each encoder) and "
                         "--clip-type TYPE; an all-in-one checkpoint needs neither.")
    if args.erasure_file is not None and not args.erasure_file.is_file():
        raise SystemExit(f"cure-erase: no erasure file at {args.erasure_file}.")
    if args.output.suffix != ".safetensors":
        raise SystemExit(f"cure-erase: --output must end in .safetensors (got {args.output.name}).")
    if args.output.resolve() == args.checkpoint.resolve():
        raise SystemExit("cure-erase: --output is the input checkpoint; write the erased model to a new file.")
    if args.output.exists() and not args.overwrite:
        raise SystemExit(f"cure-erase: {args.output} exists; pass --overwrite to replace it.")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    recipe = recipe_from_args(args)
    check_paths(args)
    load_pack(cpu=args.cpu, comfyui=args.comfyui)
    import comfy.sd
    import comfy.utils
    erase_concepts = pack_module("comfy_glue.cure").erase_concepts

    state_dict, metadata = comfy.utils.load_torch_file(str(args.checkpoint), return_metadata=True)
    model, clip = load_models(args, state_dict, metadata)
    try:
        if args.erasure_file is not None:
            from cure_core.erasure_file import load_erasure_file
            files = pack_module("comfy_glue.erasure_files")
            patched, report = files.apply_erasure_file(
                model, load_erasure_file(args.erasure_file), args.strength, args.erasure_file.name,
                files.ANY_PRECISION if args.any_precision else files.EXACT_WEIGHTS)
        else:
            patched, report = erase_concepts(model, clip, **recipe)
    except ValueError as error:           # the node's own messages: what was wrong and what to do
        raise SystemExit(f"cure-erase: {error}") from None
    print(report)
    export = pack_module("comfy_glue.lora_export")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.lora:
        lora, lora_metadata = export.erasure_lora(patched, export.LORA_DTYPES[args.lora_dtype])
        comfy.utils.save_torch_file(lora, str(args.output), metadata=lora_metadata)
        print(f"Wrote the erasure of {lora_metadata['erasure_layers']} layers as a LoRA to {args.output}")
    else:
        baked = export.erased_state_dict(patched, state_dict)
        out_metadata = {**(metadata or {}), "erasure_recipes": json.dumps(export.erasure_recipes(patched))}
        comfy.utils.save_torch_file(baked, str(args.output), metadata=out_metadata)
        print(f"Wrote the erased {'diffusion model' if args.text_encoder else 'checkpoint'} to {args.output}")
    return 0


def load_models(args: argparse.Namespace, state_dict: dict, metadata: dict | None):
    """``(MODEL, CLIP)`` as the loaders build them: Load Checkpoint for an all-in-one file; Load Diffusion Model
    and Load CLIP (its ``type``) for split files."""
    import comfy.sd
    if not args.text_encoder:
        loaded = comfy.sd.load_state_dict_guess_config(dict(state_dict), output_vae=False,
                                                        metadata=dict(metadata or {}))
        if loaded is None or loaded[1] is None:
            raise SystemExit(f"cure-erase: {args.checkpoint.name} is not an all-in-one checkpoint with a text encoder "
                             "that ComfyUI recognises; for a diffusion model file give its --text-encoder files and "
                             "--clip-type.")
        return loaded[0], loaded[1]
    clip_type = getattr(comfy.sd.CLIPType, args.clip_type.upper(), None)
    if clip_type is None:
        names = ", ".join(t.name.lower() for t in comfy.sd.CLIPType)
        raise SystemExit(f"cure-erase: unknown --clip-type {args.clip_type!r}; ComfyUI's are: {names}.")
    model = comfy.sd.load_diffusion_model_state_dict(dict(state_dict), metadata=dict(metadata or {}))
    if model is None:
        raise SystemExit(f"cure-erase: ComfyUI does not recognise {args.checkpoint.name} as a diffusion model.")
    clip = comfy.sd.load_clip([str(p) for p in args.text_encoder], clip_type=clip_type)
    return model, clip


if __name__ == "__main__":
    sys.exit(main())
