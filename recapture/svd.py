"""Stable Video Diffusion: the UNet's names in diffusers and in the original (SGM / ComfyUI) layout.

Single-file checkpoints (``svd.safetensors``, ``svd_xt.safetensors``) and core ComfyUI's LoRA loader use
the SGM layout (``input_blocks.4.1.time_stack.0.attn1.to_q``); diffusers uses named blocks
(``down_blocks.1.attentions.0.temporal_transformer_blocks.0.attn1.to_q``). The mapping depends only on
``layers_per_block`` (2 for real SVD).
"""

from __future__ import annotations

import re

# Inside one res block / transformer: diffusers name -> SGM name (first match wins).
_RES_BLOCK = [
    ("spatial_res_block.norm1.", "in_layers.0."), ("spatial_res_block.conv1.", "in_layers.2."),
    ("spatial_res_block.time_emb_proj.", "emb_layers.1."), ("spatial_res_block.norm2.", "out_layers.0."),
    ("spatial_res_block.conv2.", "out_layers.3."), ("spatial_res_block.conv_shortcut.", "skip_connection."),
    ("temporal_res_block.norm1.", "time_stack.in_layers.0."), ("temporal_res_block.conv1.", "time_stack.in_layers.2."),
    ("temporal_res_block.time_emb_proj.", "time_stack.emb_layers.1."),
    ("temporal_res_block.norm2.", "time_stack.out_layers.0."), ("temporal_res_block.conv2.", "time_stack.out_layers.3."),
    ("time_mixer.", "time_mixer."),
]
_TRANSFORMER = [
    ("temporal_transformer_blocks.", "time_stack."), ("time_pos_embed.linear_1.", "time_pos_embed.0."),
    ("time_pos_embed.linear_2.", "time_pos_embed.2."),
]
_TOP = {
    "conv_in.": "input_blocks.0.0.", "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.", "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
}


def _inside(rest: str, table: list[tuple[str, str]]) -> str:
    for old, new in table:
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def unet_diffusers_to_sgm(name: str, layers_per_block: int = 2, up_blocks_with_attention: tuple[int, ...] = (1, 2, 3)
                          ) -> str:
    """A diffusers ``UNetSpatioTemporalConditionModel`` parameter or module name -> its SGM name.

    Args:
        name: e.g. ``down_blocks.1.attentions.0.temporal_transformer_blocks.0.attn1.to_q.weight``.
        layers_per_block: res blocks per down level (up levels have one more).
        up_blocks_with_attention: up levels that have transformers (their upsampler sits one slot later).

    Raises:
        KeyError: a name that is not part of SVD's UNet.
    """
    for old, new in _TOP.items():
        if name.startswith(old):
            return new + name[len(old):]
    n = layers_per_block
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", name):
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        slot = 1 + level * (n + 1) + j
        return f"input_blocks.{slot}.{0 if kind == 'resnets' else 1}." + (
            _inside(rest, _RES_BLOCK) if kind == "resnets" else _inside(rest, _TRANSFORMER))
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", name):
        return f"input_blocks.{1 + int(m[1]) * (n + 1) + n}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", name):
        kind, j, rest = m[1], int(m[2]), m[3]
        if kind == "attentions":
            return "middle_block.1." + _inside(rest, _TRANSFORMER)
        return f"middle_block.{2 * j}." + _inside(rest, _RES_BLOCK)
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", name):
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        slot = level * (n + 1) + j
        return f"output_blocks.{slot}.{0 if kind == 'resnets' else 1}." + (
            _inside(rest, _RES_BLOCK) if kind == "resnets" else _inside(rest, _TRANSFORMER))
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", name):
        level = int(m[1])
        position = 2 if level in up_blocks_with_attention else 1
        return f"output_blocks.{level * (n + 1) + n}.{position}.conv.{m[2]}"
    raise KeyError(f"{name!r} is not a parameter of the SVD UNet")


def unet_layout(unet) -> dict:
    """The two config values the name mapping needs, read from a diffusers UNet's config."""
    per_block = unet.config.layers_per_block
    per_block = per_block if isinstance(per_block, int) else per_block[0]
    with_attention = tuple(i for i, kind in enumerate(unet.config.up_block_types) if "CrossAttn" in kind)
    return {"layers_per_block": per_block, "up_blocks_with_attention": with_attention}


# --- Loading ----------------------------------------------------------------------------------------
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")


def is_diffusers_svd_folder(folder) -> bool:
    from pathlib import Path

    folder = Path(folder)
    return (folder / "model_index.json").is_file() and (folder / "unet").is_dir()


def load_svd(path, dtype=None, device="cpu"):
    """Stable Video Diffusion from a local diffusers-format folder (StableVideoDiffusionPipeline layout).

    Only safetensors weights are read (``use_safetensors``), nothing is fetched (``local_files_only``);
    the fp16 variant is used when the folder has it.

    Returns:
        ``SVDModels`` on ``device``, frozen, in ``dtype`` (the folder's own when None).
    """
    from pathlib import Path

    import torch
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from .types import SVDModels

    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(f"{path.name}: only safetensors weights are loaded, never pickled {path.suffix} files")
    if path.is_file():
        raise ValueError(f"{path.name}: single-file SVD checkpoints are not supported yet; put a diffusers-format "
                         "SVD folder (model_index.json, unet/, vae/, image_encoder/...) into models/diffusers/")
    if not is_diffusers_svd_folder(path):
        raise ValueError(f"{path} is not a diffusers Stable Video Diffusion folder (model_index.json and unet/)")
    variant = "fp16" if any(path.glob("unet/*.fp16.safetensors")) else None
    common = dict(local_files_only=True, use_safetensors=True)
    try:
        unet = UNetSpatioTemporalConditionModel.from_pretrained(path / "unet", variant=variant, **common)
        vae = AutoencoderKLTemporalDecoder.from_pretrained(path / "vae", variant=variant, **common)
        encoder = CLIPVisionModelWithProjection.from_pretrained(path / "image_encoder", variant=variant, **common)
        processor = CLIPImageProcessor.from_pretrained(path / "feature_extractor", local_files_only=True)
        scheduler = EulerDiscreteScheduler.from_pretrained(path / "scheduler", local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load SVD from {path}: {e}") from e
    for module in (unet, vae, encoder):
        module.requires_grad_(False).eval().to(device=device, dtype=dtype or module.dtype)
    return SVDModels(unet=unet, vae=vae, image_encoder=encoder, feature_extractor=processor, scheduler=scheduler,
                     num_frames=int(getattr(unet.config, "num_frames", 14)), name=path.name)


# --- The real architectures, written here because nothing may be fetched ----------------------------
# SVD-XT's UNet is UNetSpatioTemporalConditionModel's defaults; svd differs only in num_frames (14).
VAE_CONFIG = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                  block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                  sample_size=768, scaling_factor=0.18215, force_upcast=True)
IMAGE_ENCODER_CONFIG = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                            image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5)
FEATURE_EXTRACTOR_CONFIG = dict(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                                do_center_crop=True, do_normalize=True, do_resize=True, resample=3,
                                image_mean=[0.48145466, 0.4578275, 0.40821073],
                                image_std=[0.26862954, 0.26130258, 0.27577711])
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                        prediction_type="v_prediction", interpolation_type="linear", use_karras_sigmas=True,
                        sigma_min=0.002, sigma_max=700.0, timestep_spacing="leading", timestep_type="continuous",
                        steps_offset=1)


def build_svd(num_frames: int = 25, dtype=None, device="cpu"):
    """The full-size SVD (num_frames 14) or SVD-XT (25) architecture with random weights.

    For benchmarks and for loading converted checkpoints: speed and memory do not depend on weight values.
    """
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from .types import SVDModels

    with torch.device(device):
        unet = UNetSpatioTemporalConditionModel(num_frames=num_frames)
        vae = AutoencoderKLTemporalDecoder(**VAE_CONFIG)
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**IMAGE_ENCODER_CONFIG))
    for module in (unet, vae, encoder):
        module.requires_grad_(False).eval().to(dtype=dtype or torch.float32)
    return SVDModels(unet=unet, vae=vae, image_encoder=encoder,
                     feature_extractor=CLIPImageProcessor(**FEATURE_EXTRACTOR_CONFIG),
                     scheduler=EulerDiscreteScheduler(**SCHEDULER_CONFIG), num_frames=num_frames,
                     name="svd_xt (random weights)" if num_frames == 25 else "svd (random weights)")


def build_tiny_svd(seed: int = 0):
    """SVD's real classes at a tiny size with random weights (~2 M parameters): tests and CPU benchmarks."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from .types import SVDModels

    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(
        sample_size=8, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, num_attention_heads=(2, 4),
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=24, num_frames=4)
    vae = AutoencoderKLTemporalDecoder(**dict(VAE_CONFIG, block_out_channels=(32, 32, 32, 32), layers_per_block=1))
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
        patch_size=8, projection_dim=32))
    processor = CLIPImageProcessor(**dict(FEATURE_EXTRACTOR_CONFIG, size={"shortest_edge": 32},
                                          crop_size={"height": 32, "width": 32}))
    for module in (unet, vae, encoder):
        module.eval().requires_grad_(False)
    return SVDModels(unet=unet, vae=vae, image_encoder=encoder, feature_extractor=processor,
                     scheduler=EulerDiscreteScheduler(**SCHEDULER_CONFIG), num_frames=4, name="tiny")
