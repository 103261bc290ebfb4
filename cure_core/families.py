"""Where text enters each supported model family, in ComfyUI / LDM state-dict key names.

Editing the layers that read the text encoder's per-token output is what removes a concept;
the table below says which those are, which tokenizer outputs make up the rows those layers
read, and where the family's pooled text vector enters. Keys are matched against the model's
state dict, so the same table serves real checkpoints and tiny test models. For the
transformer families the first linear layer that reads the text is edited: that is the same
as editing every key/value projection downstream of it, with far fewer weights.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

# The node's "layers" choice. The cross-attention-only choices exist for the UNet families.
ALL_TEXT_LAYERS = "all text-reading layers"
KEYS_ONLY = "cross-attention keys only"
VALUES_ONLY = "cross-attention values only"
LAYER_CHOICES = (ALL_TEXT_LAYERS, KEYS_ONLY, VALUES_ONLY)

_UNET_LAYERS = {
    ALL_TEXT_LAYERS: r"^diffusion_model\..*\.attn2\.to_[kv]\.weight$",
    KEYS_ONLY: r"^diffusion_model\..*\.attn2\.to_k\.weight$",
    VALUES_ONLY: r"^diffusion_model\..*\.attn2\.to_v\.weight$",
}

_UNET_CROSS_OUT = r"^diffusion_model\..*\.attn2\.to_out\.0\.weight$"
_FLUX_IMG_ATTN_OUT = r"^diffusion_model\.double_blocks\.\d+\.img_attn\.proj\.weight$"


@dataclass(frozen=True)
class TextSegment:
    """One run of rows in the encoder output: the tokens of tokenizer key ``tokens``.

    ``encoders`` names the text-model attributes that produce it (ComfyUI's CLIP objects leave an
    absent encoder as ``None``); empty means always present. ``window`` names a crop the encoder
    applies to those tokens (HunyuanVideo keeps only the user message of its Llama template).
    """
    tokens: str
    encoders: tuple[str, ...] = ()
    window: str | None = None
    plain_text: bool = False        # the tokenizer ignores ComfyUI's weight syntax (Qwen-Image)
    # Which of the CLIP's outputs holds the rows: the conditioning tensor, or an extra output that
    # ComfyUI passes to the model beside it (HiDream's conditioning_llama3, Hunyuan-DiT's conditioning_mt5xl).
    output: str = "cond"
    # For an output that stacks hidden layers, [batch, layers, rows, width] (HiDream's Llama): which layer.
    hidden_layer: int | None = None

    @property
    def label(self) -> str:
        """How the report names these rows."""
        return self.tokens if self.hidden_layer is None else f"{self.tokens} hidden layer {self.hidden_layer}"


@dataclass(frozen=True)
class PooledPath:
    """A layer whose input *starts* with the text encoder's pooled vector (SDXL's ``label_emb``,
    Flux's ``vector_in``, SD3's ``y_embedder``). The pooled vector's width says how many leading
    input columns read it; the rest (SDXL's size embeddings) is left alone."""
    key: str


@dataclass(frozen=True)
class Family:
    name: str
    config_names: tuple[str, ...]          # ComfyUI ``supported_models`` class names
    encoder: str                           # what the edited layers read, for reports
    # Rows of the encoder output, in order. With ``layer_reads``: every source some layer reads (a layer reads
    # one of them; HiDream's Llama at the hidden layer that ``layer_reads`` names).
    segments: tuple[TextSegment, ...]
    layer_patterns: dict[str, str]
    pooled: PooledPath | None = None
    # Refusal vector from denoiser activations: the output projections of the attention that brings
    # the text into the image/video stream; the last blocks' are edited (the paper: late blocks).
    denoiser_pattern: str | None = None
    # An RMSNorm (weight key, eps) between the encoder and the edited layer (Lumina 2's cap_embedder):
    # the edit is built from the rows as that layer reads them.
    text_norm: tuple[str, float] | None = None
    # Families whose edited layers read different encoder outputs (HiDream: each caption projection its
    # own Llama layer or the T5 rows; Hunyuan-DiT: BERT or mT5 rows): the segments that one layer reads,
    # from its key and the model's unet config. None: every edited layer reads ``segments``.
    layer_reads: Callable[[str, Mapping], tuple[TextSegment, ...]] | None = None

    def reads(self, key: str, unet_config: Mapping) -> tuple[TextSegment, ...]:
        """The rows the layer ``key`` reads, as segments of the encoder outputs: each edit is built from them."""
        return self.segments if self.layer_reads is None else self.layer_reads(key, unet_config)

    def denoiser_layer_keys(self, state_dict_keys, blocks: int = 2) -> list[str]:
        """The last ``blocks`` layers (in state-dict order, i.e. depth order) for the denoiser source."""
        if self.denoiser_pattern is None:
            raise ValueError(f"The denoiser-activation source is not available for {self.name}.")
        pattern = re.compile(self.denoiser_pattern)
        return [k for k in state_dict_keys if pattern.match(k)][-blocks:]

    def text_layer_keys(self, state_dict_keys, layers: str = ALL_TEXT_LAYERS) -> list[str]:
        """The weight keys that read the per-token text embeddings, in state-dict order."""
        if layers not in self.layer_patterns:
            raise ValueError(f"The layer choice {layers!r} does not apply to {self.name}; choose one of "
                             f"{', '.join(self.layer_patterns)}.")
        pattern = re.compile(self.layer_patterns[layers])
        return [k for k in state_dict_keys if pattern.match(k)]


def _single_layer(key: str) -> dict[str, str]:
    return {ALL_TEXT_LAYERS: "^" + re.escape(key) + "$"}


def _layers_matching(pattern: str) -> dict[str, str]:
    """Weights under ``diffusion_model.`` whose name matches ``pattern``, for the one layer choice."""
    return {ALL_TEXT_LAYERS: r"^diffusion_model\." + pattern + r"\.weight$"}


_HIDREAM_T5 = TextSegment("t5xxl", ("t5xxl",))
_HIDREAM_LLAMA = TextSegment("llama", ("llama",), output="conditioning_llama3")


def _hidream_reads(key: str, unet_config: Mapping) -> tuple[TextSegment, ...]:
    """HiDream's ``caption_projection.i`` reads Llama hidden layer ``llama_layers[i]`` (ComfyUI passes every
    layer of the Llama, less its embedding output, as conditioning_llama3); the last one reads the T5 rows."""
    index = int(key.split(".")[2])
    llama_layers = list(unet_config["llama_layers"])
    if index == len(llama_layers):
        return (_HIDREAM_T5,)
    return (replace(_HIDREAM_LLAMA, hidden_layer=llama_layers[index]),)


_HYDIT_BERT = TextSegment("hydit_clip")
_HYDIT_MT5 = TextSegment("mt5xl", output="conditioning_mt5xl")


def _hydit_reads(key: str, _unet_config: Mapping) -> tuple[TextSegment, ...]:
    """Hunyuan-DiT's cross-attention reads the BERT rows as they are; ``mlp_t5`` and the attention pool read
    the mT5 rows (the pool's query on their mean)."""
    return (_HYDIT_BERT,) if ".attn2.kv_proj." in key else (_HYDIT_MT5,)


FAMILIES: tuple[Family, ...] = (
    Family("SD1.x", ("SD15", "SD15_instructpix2pix"),
           encoder="CLIP ViT-L/14 token embeddings (last layer, or the one CLIPSetLastLayer picks)",
           segments=(TextSegment("l"),), layer_patterns=_UNET_LAYERS, denoiser_pattern=_UNET_CROSS_OUT),
    Family("SD2.x", ("SD20", "SD21UnclipL", "SD21UnclipH", "LotusD"),
           encoder="OpenCLIP ViT-H/14 token embeddings (penultimate layer)",
           segments=(TextSegment("h"),), layer_patterns=_UNET_LAYERS, denoiser_pattern=_UNET_CROSS_OUT),
    Family("SDXL", ("SDXL", "SSD1B", "Segmind_Vega", "KOALA_700M", "KOALA_1B", "SDXL_instructpix2pix"),
           encoder="CLIP-L ⊕ CLIP-G token embeddings (2048 wide)",
           segments=(TextSegment("g"),), layer_patterns=_UNET_LAYERS,
           pooled=PooledPath("diffusion_model.label_emb.0.0.weight"), denoiser_pattern=_UNET_CROSS_OUT),
    Family("SDXL Refiner", ("SDXLRefiner",),
           encoder="CLIP-G token embeddings (1280 wide)",
           segments=(TextSegment("g"),), layer_patterns=_UNET_LAYERS,
           pooled=PooledPath("diffusion_model.label_emb.0.0.weight"), denoiser_pattern=_UNET_CROSS_OUT),
    Family("SD3", ("SD3",),
           encoder="77 CLIP-L ⊕ CLIP-G rows (zero-padded to 4096) followed by the T5-XXL rows",
           segments=(TextSegment("l", ("clip_l", "clip_g")), TextSegment("t5xxl", ("t5xxl",))),
           layer_patterns=_single_layer("diffusion_model.context_embedder.weight"),
           pooled=PooledPath("diffusion_model.y_embedder.mlp.0.weight"),
           denoiser_pattern=r"^diffusion_model\.joint_blocks\.\d+\.x_block\.attn\.proj\.weight$"),
    Family("Flux", ("Flux", "FluxInpaint", "FluxSchnell"),
           encoder="T5-XXL token embeddings (4096 wide); CLIP-L pooled for vector_in",
           segments=(TextSegment("t5xxl"),),
           layer_patterns=_single_layer("diffusion_model.txt_in.weight"),
           pooled=PooledPath("diffusion_model.vector_in.in_layer.weight"), denoiser_pattern=_FLUX_IMG_ATTN_OUT),
    Family("Chroma", ("Chroma", "ChromaRadiance"),
           encoder="T5-XXL token embeddings (4096 wide)",
           segments=(TextSegment("t5xxl"),),
           layer_patterns=_single_layer("diffusion_model.txt_in.weight"), denoiser_pattern=_FLUX_IMG_ATTN_OUT),
    Family("Wan 2.1 / 2.2", ("WAN21_T2V", "WAN21_I2V", "WAN21_FunControl2V", "WAN21_Camera", "WAN22_Camera",
                             "WAN21_Vace", "WAN22_T2V"),
           encoder="umT5-XXL token embeddings (4096 wide, 512 rows, zero after the end token)",
           segments=(TextSegment("umt5xxl"),),
           layer_patterns=_single_layer("diffusion_model.text_embedding.0.weight"),
           denoiser_pattern=r"^diffusion_model\.blocks\.\d+\.cross_attn\.o\.weight$"),
    Family("LTX-Video", ("LTXV",),
           encoder="T5-XXL token embeddings (4096 wide, 128 rows)",
           segments=(TextSegment("t5xxl"),),
           layer_patterns=_single_layer("diffusion_model.caption_projection.linear_1.weight"),
           denoiser_pattern=r"^diffusion_model\.transformer_blocks\.\d+\.attn2\.to_out\.0\.weight$"),
    Family("Mochi", ("GenmoMochi",),
           encoder="T5-XXL token embeddings (4096 wide, 256 rows); the attention pool reads them and their mean",
           segments=(TextSegment("t5xxl"),),
           layer_patterns={ALL_TEXT_LAYERS: r"^diffusion_model\.(t5_yproj|t5_y_embedder\.to_kv|t5_y_embedder\.to_q)"
                                            r"\.weight$"},
           denoiser_pattern=r"^diffusion_model\.blocks\.\d+\.attn\.proj_x\.weight$"),
    Family("PixArt", ("PixArtAlpha", "PixArtSigma"),
           encoder="T5-XXL token embeddings (4096 wide)",
           segments=(TextSegment("t5xxl"),),
           layer_patterns=_single_layer("diffusion_model.y_embedder.y_proj.fc1.weight"),
           denoiser_pattern=r"^diffusion_model\.blocks\.\d+\.cross_attn\.proj\.weight$"),
    Family("HunyuanVideo", ("HunyuanVideo", "HunyuanVideoI2V", "HunyuanVideoSkyreelsI2V"),
           encoder="Llama-3 hidden states of the user message (4096 wide; the template is cropped); "
                   "CLIP-L pooled for vector_in",
           segments=(TextSegment("llama", window="llama3 user message"),),
           layer_patterns={ALL_TEXT_LAYERS: r"^diffusion_model\.txt_in\.(input_embedder|c_embedder\.in_layer)"
                                            r"\.weight$"},
           pooled=PooledPath("diffusion_model.vector_in.in_layer.weight"),
           denoiser_pattern=_FLUX_IMG_ATTN_OUT),
    Family("Qwen-Image", ("QwenImage",),
           encoder="Qwen2.5-VL 7B hidden states of the user message and the assistant header (3584 wide; the "
                   "system template is cropped), RMS-normalised by txt_norm",
           segments=(TextSegment("qwen25_7b", window="qwen image template", plain_text=True),),
           layer_patterns=_single_layer("diffusion_model.txt_in.weight"),
           denoiser_pattern=r"^diffusion_model\.transformer_blocks\.\d+\.attn\.to_out\.0\.weight$",
           text_norm=("diffusion_model.txt_norm.weight", 1e-6)),
    Family("Lumina 2", ("Lumina2",),
           encoder="Gemma-2 2B hidden states (2304 wide), RMS-normalised by cap_embedder.0",
           segments=(TextSegment("gemma2_2b"),),
           layer_patterns=_single_layer("diffusion_model.cap_embedder.1.weight"),
           denoiser_pattern=r"^diffusion_model\.layers\.\d+\.attention\.out\.weight$",
           text_norm=("diffusion_model.cap_embedder.0.weight", 1e-5)),
    Family("Cosmos 1.0", ("CosmosT2V", "CosmosI2V"),
           encoder="T5-XXL (Cosmos' 1024-wide T5) token embeddings, 512 rows",
           segments=(TextSegment("t5xxl"),),
           # blocks are FA-CA-MLP: sub-block 1 is the cross-attention
           layer_patterns={
               ALL_TEXT_LAYERS: r"^diffusion_model\.blocks\.block\d+\.blocks\.1\.block\.attn\.to_[kv]\.0\.weight$",
               KEYS_ONLY: r"^diffusion_model\.blocks\.block\d+\.blocks\.1\.block\.attn\.to_k\.0\.weight$",
               VALUES_ONLY: r"^diffusion_model\.blocks\.block\d+\.blocks\.1\.block\.attn\.to_v\.0\.weight$"},
           denoiser_pattern=r"^diffusion_model\.blocks\.block\d+\.blocks\.1\.block\.attn\.to_out\.0\.weight$"),
    Family("Cosmos Predict2", ("CosmosT2IPredict2", "CosmosI2VPredict2"),
           encoder="T5-XXL (Cosmos' 1024-wide T5) token embeddings, 512 rows",
           segments=(TextSegment("t5xxl"),),
           layer_patterns={ALL_TEXT_LAYERS: r"^diffusion_model\.blocks\.\d+\.cross_attn\.[kv]_proj\.weight$",
                           KEYS_ONLY: r"^diffusion_model\.blocks\.\d+\.cross_attn\.k_proj\.weight$",
                           VALUES_ONLY: r"^diffusion_model\.blocks\.\d+\.cross_attn\.v_proj\.weight$"},
           denoiser_pattern=r"^diffusion_model\.blocks\.\d+\.cross_attn\.output_proj\.weight$"),
    Family("Stable Cascade", ("Stable_Cascade_C",),
           encoder="CLIP-G token embeddings (1280 wide) read by stage C; CLIP-G pooled for clip_txt_pooled_mapper",
           segments=(TextSegment("g"),),
           layer_patterns=_single_layer("diffusion_model.clip_txt_mapper.weight"),
           pooled=PooledPath("diffusion_model.clip_txt_pooled_mapper.weight"),
           denoiser_pattern=r"^diffusion_model\.(down|up)_blocks\.\d+\.\d+\.attention\.attn\.out_proj\.weight$"),
    Family("HiDream", ("HiDream",),
           encoder="Llama-3.1 8B hidden states (one layer per caption projection, 4096 wide) and T5-XXL token "
                   "embeddings (4096 wide, 128 rows); CLIP-L ⊕ CLIP-G pooled for p_embedder",
           segments=(_HIDREAM_T5, _HIDREAM_LLAMA),
           layer_patterns=_layers_matching(r"caption_projection\.\d+\.linear"),
           pooled=PooledPath("diffusion_model.p_embedder.pooled_embedder.linear_1.weight"),
           denoiser_pattern=r"^diffusion_model\.double_stream_blocks\.\d+\.block\.attn1\.to_out\.weight$",
           layer_reads=_hidream_reads),
    Family("Hunyuan-DiT", ("HunyuanDiT", "HunyuanDiT1"),
           encoder="Chinese RoBERTa (BERT) token embeddings (1024 wide) read by every cross-attention; mT5-XL "
                   "token embeddings (2048 wide, 256 rows) read by mlp_t5 and the attention pool",
           segments=(_HYDIT_BERT, _HYDIT_MT5),
           layer_patterns=_layers_matching(r"(blocks\.\d+\.attn2\.kv_proj|mlp_t5\.0|pooler\.[kqv]_proj)"),
           denoiser_pattern=r"^diffusion_model\.blocks\.\d+\.attn2\.out_proj\.weight$",
           layer_reads=_hydit_reads),
)


def supported_family_names() -> str:
    return ", ".join(f.name for f in FAMILIES)


def family_for_config(config_name: str) -> Family:
    """The family of a ComfyUI model config class name, or a clear error naming the supported ones."""
    for family in FAMILIES:
        if config_name in family.config_names:
            return family
    raise ValueError(f"Concept erasure does not support this model yet (ComfyUI model type {config_name!r}). "
                     f"Supported families: {supported_family_names()}.")
