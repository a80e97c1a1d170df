"""Stable Video Diffusion: its real configs, its names in two layouts, and loading it offline.

Two layouts name the same weights:

- **SGM** (Stability's generative-models code; what ComfyUI uses and what the single-file
  ``svd.safetensors`` / ``svd_xt.safetensors`` hold):
  ``model.diffusion_model.input_blocks.4.1.time_stack.0.attn1.to_q.weight`` for the UNet,
  ``first_stage_model.decoder.up.0.block.0.time_stack.in_layers.2.weight`` for the VAE and
  ``conditioner.embedders.0.open_clip.model.visual.transformer.resblocks.0.attn.in_proj_weight`` for the
  OpenCLIP ViT-H/14 image encoder.
- **diffusers / transformers** (what this library runs): ``UNetSpatioTemporalConditionModel``
  (``down_blocks.1.attentions.0.temporal_transformer_blocks.0.attn1.to_q.weight``),
  ``AutoencoderKLTemporalDecoder`` and ``CLIPVisionModelWithProjection``.

The UNet mapping is one-to-one and depends only on ``layers_per_block`` and which up levels have
attention (``unet_layout``). The VAE mapping renames, turns the attention's 1x1 convs into Linear
weights and supplies the identity ``quant_conv`` that the single file does not store. The OpenCLIP
mapping splits the fused q/k/v projection and transposes the output projection.

Only safetensors are read (never pickles) and nothing is fetched: folders load with
``local_files_only=True``. diffusers and transformers are imported inside the functions that need them,
so importing this module stays cheap.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

from .types import SVDModels

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "conditioner.embedders.0.open_clip.model.visual."
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
WHERE_SVD_GOES = ("Put svd.safetensors / svd_xt.safetensors (or their _fp16 versions) in models/checkpoints, "
                  "or a diffusers-format SVD folder in models/diffusers.")

# --- The real architectures, written here because nothing may be fetched ----------------------------
# SVD-XT's UNet (stabilityai/stable-video-diffusion-img2vid-xt, unet/config.json); svd differs only in
# num_frames (14). sample_size only sets a default resolution and is never used by this library.
UNET_CONFIG = dict(
    sample_size=96, in_channels=8, out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
    up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, transformer_layers_per_block=1,
    num_attention_heads=(5, 10, 20, 20), cross_attention_dim=1024,
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=768,  # 3 ids: fps-1, motion bucket, noise aug
    num_frames=25)
VAE_CONFIG = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                  block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                  sample_size=768, scaling_factor=0.18215, force_upcast=True)
# OpenCLIP ViT-H/14 as transformers names it; OpenCLIP uses exact GELU and LayerNorm eps 1e-5.
IMAGE_ENCODER_CONFIG = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                            image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5)
FEATURE_EXTRACTOR_CONFIG = dict(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                                do_center_crop=True, do_normalize=True, do_rescale=True, do_resize=True,
                                do_convert_rgb=True, resample=3,  # bicubic
                                image_mean=[0.48145466, 0.4578275, 0.40821073],
                                image_std=[0.26862954, 0.26130258, 0.27577711])
# EDM sampling with v-prediction: "continuous" makes the scheduler hand the UNet c_noise = 0.25 ln(sigma)
# as the timestep (what SVD was trained with) instead of a discrete index.
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                        prediction_type="v_prediction", interpolation_type="linear", use_karras_sigmas=True,
                        sigma_min=0.002, sigma_max=700.0, timestep_spacing="leading", timestep_type="continuous",
                        steps_offset=1)


def frames_from_name(name: str) -> int:
    """Frames an SVD checkpoint was trained for, from its file or folder name: 25 for "xt", else 14."""
    return 25 if "xt" in name.lower() else 14


def svd_configs(num_frames: int = 25) -> dict[str, dict]:
    """The real configs: ``{"unet", "vae", "image_encoder"}`` keyword dicts (SVD-XT at 25 frames, svd at 14)."""
    return {"unet": dict(UNET_CONFIG, num_frames=num_frames), "vae": dict(VAE_CONFIG),
            "image_encoder": dict(IMAGE_ENCODER_CONFIG)}


def tiny_svd_configs() -> dict[str, dict]:
    """SVD's architecture at a tiny size (~2 M parameters): 2 UNet levels, 64x64 frames, 4 frames, 32 px CLIP.

    Keeps the constraints the real model has: channel counts are multiples of 32 (GroupNorm), the VAE has
    4 levels (x8), ``cross_attention_dim == projection_dim`` and the added-time input is 3 embeddings.
    """
    unet = dict(UNET_CONFIG, sample_size=8,
                down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
                up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), block_out_channels=(32, 64),
                layers_per_block=1, num_attention_heads=(2, 4), cross_attention_dim=32, addition_time_embed_dim=8,
                projection_class_embeddings_input_dim=24, num_frames=4)
    clip = dict(IMAGE_ENCODER_CONFIG, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                image_size=32, patch_size=8, projection_dim=32)
    return {"unet": unet, "vae": dict(VAE_CONFIG, block_out_channels=(32, 32, 32, 32)), "image_encoder": clip}


# --- UNet names -------------------------------------------------------------------------------------
# Inside one res block / transformer: (diffusers, SGM) name prefixes.
_RES_BLOCK = [
    ("spatial_res_block.norm1.", "in_layers.0."), ("spatial_res_block.conv1.", "in_layers.2."),
    ("spatial_res_block.time_emb_proj.", "emb_layers.1."), ("spatial_res_block.norm2.", "out_layers.0."),
    ("spatial_res_block.conv2.", "out_layers.3."), ("spatial_res_block.conv_shortcut.", "skip_connection."),
    ("temporal_res_block.norm1.", "time_stack.in_layers.0."), ("temporal_res_block.conv1.", "time_stack.in_layers.2."),
    ("temporal_res_block.time_emb_proj.", "time_stack.emb_layers.1."),
    ("temporal_res_block.norm2.", "time_stack.out_layers.0."),
    ("temporal_res_block.conv2.", "time_stack.out_layers.3."),
    ("time_mixer.", "time_mixer."),
]
# Transformer names not listed here (norm, proj_in/out, transformer_blocks, time_mixer) are equal.
_TRANSFORMER = [
    ("temporal_transformer_blocks.", "time_stack."), ("time_pos_embed.linear_1.", "time_pos_embed.0."),
    ("time_pos_embed.linear_2.", "time_pos_embed.2."),
]
_TOP = [
    ("conv_in.", "input_blocks.0.0."), ("time_embedding.linear_1.", "time_embed.0."),
    ("time_embedding.linear_2.", "time_embed.2."), ("add_embedding.linear_1.", "label_emb.0.0."),
    ("add_embedding.linear_2.", "label_emb.0.2."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2."),
]


def _rename(rest: str, table: list[tuple[str, str]], to_sgm: bool, strict: bool) -> str:
    for diffusers, sgm in table:
        old, new = (diffusers, sgm) if to_sgm else (sgm, diffusers)
        if rest.startswith(old):
            return new + rest[len(old):]
    if strict:  # every weight of a res block is listed: anything else is not an SVD res-block weight
        raise KeyError(rest)
    return rest


def _res_block(rest: str, to_sgm: bool) -> str:
    return _rename(rest, _RES_BLOCK, to_sgm, strict=True)


def _transformer(rest: str, to_sgm: bool) -> str:
    return _rename(rest, _TRANSFORMER, to_sgm, strict=False)


def unet_diffusers_to_sgm(name: str, layers_per_block: int = 2, up_blocks_with_attention: tuple[int, ...] = (1, 2, 3)
                          ) -> str:
    """A diffusers ``UNetSpatioTemporalConditionModel`` weight name -> its SGM name (no ``model.diffusion_model.``).

    ``down_blocks.1.attentions.0.temporal_transformer_blocks.0.attn1.to_q.weight`` ->
    ``input_blocks.4.1.time_stack.0.attn1.to_q.weight``. SGM numbers its blocks in one sequence per side:
    ``input_blocks`` = conv_in, then per level ``layers_per_block`` (res block, transformer) pairs and a
    downsampler; ``output_blocks`` = per level ``layers_per_block + 1`` pairs, the upsampler sitting after
    the transformer (slot 2) or, on levels without attention, after the res block (slot 1).

    Args:
        name: a parameter name (``...weight`` / ``...bias`` / ``...mix_factor``).
        layers_per_block: res blocks per down level (up levels have one more); 2 for real SVD.
        up_blocks_with_attention: up levels that have transformers; ``(1, 2, 3)`` for real SVD.

    Raises:
        KeyError: a name that is not a weight of SVD's UNet.
    """
    try:
        return _diffusers_to_sgm(name, layers_per_block, up_blocks_with_attention)
    except KeyError:
        raise KeyError(f"{name!r} is not a weight of the SVD UNet") from None


def _diffusers_to_sgm(name: str, n: int, up_blocks_with_attention: tuple[int, ...]) -> str:
    for diffusers, sgm in _TOP:
        if name.startswith(diffusers):
            return sgm + name[len(diffusers):]
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name):
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        slot = 1 + level * (n + 1) + j
        if kind == "resnets":
            return f"input_blocks.{slot}.0.{_res_block(rest, True)}"
        return f"input_blocks.{slot}.1.{_transformer(rest, True)}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", name):
        return f"input_blocks.{1 + int(m[1]) * (n + 1) + n}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d)\.(.+)", name):
        if m[1] == "attentions":
            return f"middle_block.1.{_transformer(m[3], True)}"
        return f"middle_block.{2 * int(m[2])}.{_res_block(m[3], True)}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name):
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        slot = level * (n + 1) + j
        if kind == "resnets":
            return f"output_blocks.{slot}.0.{_res_block(rest, True)}"
        return f"output_blocks.{slot}.1.{_transformer(rest, True)}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", name):
        level = int(m[1])
        position = 2 if level in up_blocks_with_attention else 1
        return f"output_blocks.{level * (n + 1) + n}.{position}.conv.{m[2]}"
    raise KeyError(name)


def unet_sgm_to_diffusers(name: str, layers_per_block: int = 2, up_blocks_with_attention: tuple[int, ...] = (1, 2, 3)
                          ) -> str:
    """The inverse of ``unet_diffusers_to_sgm``: an SGM UNet weight name (no prefix) -> the diffusers name.

    Raises:
        KeyError: a name that is not a weight of SVD's UNet.
    """
    try:
        return _sgm_to_diffusers(name, layers_per_block, up_blocks_with_attention)
    except KeyError:
        raise KeyError(f"{name!r} is not a weight of the SVD UNet") from None


def _sgm_to_diffusers(name: str, n: int, up_blocks_with_attention: tuple[int, ...]) -> str:
    for diffusers, sgm in _TOP:
        if name.startswith(sgm):
            return diffusers + name[len(sgm):]
    if m := re.fullmatch(r"input_blocks\.(\d+)\.0\.op\.(.+)", name):
        return f"down_blocks.{(int(m[1]) - 1) // (n + 1)}.downsamplers.0.conv.{m[2]}"
    if m := re.fullmatch(r"input_blocks\.(\d+)\.([01])\.(.+)", name):
        level, j = divmod(int(m[1]) - 1, n + 1)
        if m[2] == "0":
            return f"down_blocks.{level}.resnets.{j}.{_res_block(m[3], False)}"
        return f"down_blocks.{level}.attentions.{j}.{_transformer(m[3], False)}"
    if m := re.fullmatch(r"middle_block\.([012])\.(.+)", name):
        if m[1] == "1":
            return f"mid_block.attentions.0.{_transformer(m[2], False)}"
        return f"mid_block.resnets.{int(m[1]) // 2}.{_res_block(m[2], False)}"
    if m := re.fullmatch(r"output_blocks\.(\d+)\.([012])\.(.+)", name):
        level, j = divmod(int(m[1]), n + 1)
        upsampler = m[2] == "2" or (m[2] == "1" and level not in up_blocks_with_attention)
        if upsampler and m[3].startswith("conv."):
            return f"up_blocks.{level}.upsamplers.0.{m[3]}"
        if m[2] == "0":
            return f"up_blocks.{level}.resnets.{j}.{_res_block(m[3], False)}"
        return f"up_blocks.{level}.attentions.{j}.{_transformer(m[3], False)}"
    raise KeyError(name)


def unet_diffusers_to_sgm_module_path(name: str, layers_per_block: int = 2,
                                      up_blocks_with_attention: tuple[int, ...] = (1, 2, 3)) -> str:
    """A diffusers UNet layer path -> its SGM path, for a layer that holds weights (Linear, Conv, norm).

    ``down_blocks.1.attentions.0.temporal_transformer_blocks.0.attn1.to_q`` ->
    ``input_blocks.4.1.time_stack.0.attn1.to_q``; ComfyUI's LoRA keys are ``diffusion_model.<this>.lora_A.weight``.

    Raises:
        KeyError: not a weight-holding layer of SVD's UNet (containers such as ``...resnets.0`` included).
    """
    return unet_diffusers_to_sgm(name + ".weight", layers_per_block, up_blocks_with_attention)[: -len(".weight")]


def unet_sgm_to_diffusers_module_path(name: str, layers_per_block: int = 2,
                                      up_blocks_with_attention: tuple[int, ...] = (1, 2, 3)) -> str:
    """The inverse of ``unet_diffusers_to_sgm_module_path`` (e.g. for ComfyUI LoRA keys)."""
    return unet_sgm_to_diffusers(name + ".weight", layers_per_block, up_blocks_with_attention)[: -len(".weight")]


def unet_layout(unet) -> dict:
    """The two values the UNet name mapping needs, from a diffusers UNet's config (keyword arguments)."""
    per_block = unet.config.layers_per_block
    per_block = per_block if isinstance(per_block, int) else per_block[0]
    with_attention = tuple(i for i, kind in enumerate(unet.config.up_block_types) if "CrossAttn" in kind)
    return {"layers_per_block": per_block, "up_blocks_with_attention": with_attention}


def unet_state_from_sgm(state: Mapping[str, torch.Tensor], layers_per_block: int = 2,
                        up_blocks_with_attention: tuple[int, ...] = (1, 2, 3)) -> dict[str, torch.Tensor]:
    """An SGM UNet state dict (``model.diffusion_model.`` removed) with diffusers names; same tensors."""
    return {unet_sgm_to_diffusers(k, layers_per_block, up_blocks_with_attention): v for k, v in state.items()}


# --- VAE names --------------------------------------------------------------------------------------
_VAE_ATTENTION = [("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."),
                  ("proj_out.", "to_out.0.")]
_VAE_TIME_STACK = [("in_layers.0.", "norm1."), ("in_layers.2.", "conv1."), ("out_layers.0.", "norm2."),
                   ("out_layers.3.", "conv2.")]


def _vae_resnet(rest: str, temporal_decoder: bool) -> str:
    rest = rest.replace("nin_shortcut.", "conv_shortcut.")
    if not temporal_decoder:
        return rest
    if rest.startswith("time_stack."):
        inner = rest[len("time_stack."):]
        for old, new in _VAE_TIME_STACK:
            if inner.startswith(old):
                return "temporal_res_block." + new + inner[len(old):]
    if rest.startswith("mix_factor"):
        return "time_mixer." + rest
    return "spatial_res_block." + rest


def vae_sgm_to_diffusers(name: str, levels: int = 4, temporal_decoder: bool = True) -> str:
    """An SGM / LDM VAE key (``first_stage_model.`` removed) -> the diffusers key: of
    ``AutoencoderKLTemporalDecoder`` for SVD's VAE, of ``AutoencoderKL`` for an image VAE
    (``temporal_decoder=False``: SD 1.x/2.x's, the files in ComfyUI's models/vae).

    The encoder is the standard LDM one; SVD's decoder's res blocks carry a temporal branch
    (``time_stack``, mixed in by ``mix_factor``) and its output conv a temporal conv
    (``conv_out.time_mix_conv``). SGM counts the decoder's levels from the lowest resolution up,
    diffusers from the top, hence ``levels``.

    Raises:
        KeyError: a name that is not a key of such a VAE.
    """
    side, _, rest = name.partition(".")
    video = side == "decoder" and temporal_decoder
    if not temporal_decoder and side in ("quant_conv", "post_quant_conv"):
        return name
    if side not in ("encoder", "decoder"):
        raise KeyError(f"{name!r} is not a key of {'SVD' if temporal_decoder else 'an image'} VAE")
    if rest.startswith("norm_out."):
        return f"{side}.conv_norm_out.{rest[len('norm_out.'):]}"
    if video and rest.startswith("conv_out.time_mix_conv."):
        return f"{side}.time_conv_out.{rest[len('conv_out.time_mix_conv.'):]}"
    if m := re.fullmatch(r"mid\.block_([12])\.(.+)", rest):
        return f"{side}.mid_block.resnets.{int(m[1]) - 1}.{_vae_resnet(m[2], video)}"
    if m := re.fullmatch(r"mid\.attn_1\.(.+)", rest):
        for old, new in _VAE_ATTENTION:
            if m[1].startswith(old):
                return f"{side}.mid_block.attentions.0.{new}{m[1][len(old):]}"
    if m := re.fullmatch(r"(down|up)\.(\d+)\.block\.(\d+)\.(.+)", rest):
        level = int(m[2]) if m[1] == "down" else levels - 1 - int(m[2])
        return f"{side}.{m[1]}_blocks.{level}.resnets.{m[3]}.{_vae_resnet(m[4], video)}"
    if m := re.fullmatch(r"(down|up)\.(\d+)\.(downsample|upsample)\.conv\.(.+)", rest):
        level = int(m[2]) if m[1] == "down" else levels - 1 - int(m[2])
        return f"{side}.{m[1]}_blocks.{level}.{m[3]}rs.0.conv.{m[4]}"
    if re.fullmatch(r"conv_(in|out)\.(weight|bias)", rest):
        return name
    raise KeyError(f"{name!r} is not a key of {'SVD' if temporal_decoder else 'an image'} VAE")


def vae_state_from_sgm(state: Mapping[str, torch.Tensor], temporal_decoder: bool = True) -> dict[str, torch.Tensor]:
    """An SGM / LDM VAE state dict (``first_stage_model.`` removed) -> ``AutoencoderKLTemporalDecoder``'s
    (SVD), or ``AutoencoderKL``'s with ``temporal_decoder=False`` (``vae_sgm_to_diffusers``).

    The mid-block attention's q/k/v/proj_out are ``(C, C, 1, 1)`` convs in SGM and ``(C, C)`` Linear
    weights in diffusers. SVD's file has no ``quant_conv`` (SGM's encoder output goes straight to the
    Gaussian), so diffusers' gets the identity.
    """
    levels = len({m[1] for k in state if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
    out = {}
    for key, value in state.items():
        name = vae_sgm_to_diffusers(key, levels, temporal_decoder)
        if ".attentions." in name and name.endswith(".weight") and value.ndim == 4:
            value = value[:, :, 0, 0]
        out[name] = value
    if "quant_conv.weight" not in out and "encoder.conv_out.weight" in out:
        moments = out["encoder.conv_out.weight"]
        channels = moments.shape[0]
        out["quant_conv.weight"] = torch.eye(channels, dtype=moments.dtype, device=moments.device)[:, :, None, None]
        out["quant_conv.bias"] = torch.zeros(channels, dtype=moments.dtype, device=moments.device)
    return out


# --- OpenCLIP names ---------------------------------------------------------------------------------
_CLIP_TOP = {"conv1.weight": "vision_model.embeddings.patch_embedding.weight",
             "class_embedding": "vision_model.embeddings.class_embedding",
             "positional_embedding": "vision_model.embeddings.position_embedding.weight",
             "ln_pre.weight": "vision_model.pre_layrnorm.weight",  # sic: transformers' spelling
             "ln_pre.bias": "vision_model.pre_layrnorm.bias",
             "ln_post.weight": "vision_model.post_layernorm.weight", "ln_post.bias": "vision_model.post_layernorm.bias"}
_CLIP_LAYER = [("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("attn.out_proj.", "self_attn.out_proj."),
               ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2.")]


def openclip_to_clip_vision(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP ``visual.*`` weights (prefix removed) -> ``CLIPVisionModelWithProjection`` weights.

    OpenCLIP keeps q, k, v in one ``in_proj`` matrix ``(3C, C)`` and projects with ``x @ proj``
    (``proj`` is ``(C, P)``); transformers splits the first and stores the second transposed as a Linear.

    Raises:
        KeyError: a key that is not part of an OpenCLIP vision tower.
    """
    out = {}
    for key, value in state.items():
        if key in _CLIP_TOP:
            out[_CLIP_TOP[key]] = value
        elif key == "proj":
            out["visual_projection.weight"] = value.T.contiguous()
        elif m := re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)", key):
            layer, rest = f"vision_model.encoder.layers.{m[1]}", m[2]
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = rest[len("attn.in_proj_"):]
                for name, part in zip(("q", "k", "v"), value.chunk(3, dim=0)):
                    out[f"{layer}.self_attn.{name}_proj.{kind}"] = part.contiguous()
                continue
            for old, new in _CLIP_LAYER:
                if rest.startswith(old):
                    out[f"{layer}.{new}{rest[len(old):]}"] = value
                    break
            else:
                raise KeyError(f"{key!r} is not a key of an OpenCLIP vision tower")
        else:
            raise KeyError(f"{key!r} is not a key of an OpenCLIP vision tower")
    return out


# --- Recognising checkpoints ------------------------------------------------------------------------
def is_svd_checkpoint(keys: Iterable[str]) -> bool:
    """Whether single-file keys hold a complete SVD: a UNet with temporal layers (``time_stack``,
    ``time_mixer``), the VAE with its temporal decoder and the OpenCLIP image encoder."""
    keys = list(keys)
    unet = [k for k in keys if k.startswith(UNET_PREFIX)]
    return (any("time_stack" in k for k in unet) and any("time_mixer" in k for k in unet)
            and any(k.startswith(VAE_PREFIX + "decoder.") and "time_stack" in k for k in keys)
            and any(k.startswith(CLIP_PREFIX) for k in keys))


def describe_checkpoint(keys: Iterable[str]) -> str:
    """What a single-file checkpoint looks like from its key names, for the error when it is not SVD.

    Returns a noun phrase ("an SDXL checkpoint", "a LoRA file", ...).
    """
    keys = list(keys)
    has = lambda part: any(part in k for k in keys)  # noqa: E731
    starts = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    if has("lora_") or has("_lora.") or has(".lora.") or has(".hada_") or has(".lokr_"):
        return "a LoRA file"
    if starts(UNET_PREFIX) and has("time_stack"):
        if not starts(VAE_PREFIX) or not starts(CLIP_PREFIX):
            parts = (("VAE", VAE_PREFIX), ("image encoder", CLIP_PREFIX))
            missing = [part for part, prefix in parts if not starts(prefix)]
            return f"a Stable Video Diffusion UNet without its {' and '.join(missing)}"
        return ("the SVD variant with a per-frame image decoder (svd_image_decoder / svd_xt_image_decoder); "
                "ReCapture needs the temporal decoder of svd.safetensors / svd_xt.safetensors")
    if has("double_blocks.") or has("single_blocks."):
        return "a Flux-style diffusion transformer checkpoint"
    if has("joint_blocks."):
        return "a Stable Diffusion 3 checkpoint"
    if starts("conditioner.embedders.1."):
        return "an SDXL checkpoint"
    if starts("cond_stage_model."):
        return "a Stable Diffusion 1.x/2.x checkpoint"
    if starts(UNET_PREFIX):
        return "an image diffusion checkpoint without temporal layers"
    if starts("input_blocks.") and has("dense_emb_layers"):
        return "a Stable Virtual Camera checkpoint (the multi-view anchor's model, not SVD)"
    if starts("input_blocks.") and has("time_stack"):
        return "a Stable Video Diffusion UNet on its own (no VAE or image encoder)"
    if starts("input_blocks."):
        return "a UNet on its own (no VAE or image encoder)"
    if starts("down_blocks.") and starts("conv_in."):
        return "one diffusers-format UNet file (load the whole diffusers folder, the one with model_index.json)"
    if keys and all(k.startswith(("encoder.", "decoder.", "quant_conv", "post_quant_conv")) for k in keys):
        return "a VAE on its own"
    if starts("vision_model.") or starts("visual.") or (starts("transformer.resblocks.") and starts("conv1.")):
        return "a CLIP vision (image encoder) model"
    if starts("text_model.") or has("token_embedding"):
        return "a text encoder"
    if has("blocks.") and not has("input_blocks."):
        return "a diffusion transformer (DiT) checkpoint"
    return f"an unknown model (first keys: {', '.join(sorted(keys)[:3])})"


MAX_SAFETENSORS_HEADER = 100 * 2**20  # the safetensors format's own limit


def safetensors_keys(path) -> list[str]:
    """The tensor names of a ``.safetensors`` file, read from its header alone (8 bytes of length, then
    JSON): no weight is read, so checking a multi-GB checkpoint costs a few hundred KB of reading.

    Raises:
        ValueError: not a safetensors file (or a damaged one); OSError: unreadable.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else 0
        if not 2 <= size <= MAX_SAFETENSORS_HEADER:
            raise ValueError(f"{path.name} is not a safetensors file (or it is damaged or incomplete)")
        text = f.read(size)
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        header = None
    if not isinstance(header, dict):
        raise ValueError(f"{path.name} is not a safetensors file (or it is damaged or incomplete)")
    return [k for k in header if k != "__metadata__"]


# --- Building the modules ---------------------------------------------------------------------------
def use_original_norm_eps(unet) -> None:
    """Sets the res blocks' GroupNorm eps to the original model's 1e-5.

    diffusers builds some of SVD's res-block norms with eps 1e-6; the original implementation (and
    ComfyUI) use 1e-5, which is what the released weights were trained with.
    """
    for name, module in unet.named_modules():
        if ".resnets." in name and isinstance(module, torch.nn.GroupNorm):
            module.eps = 1e-5


def svd_from_configs(configs: Mapping[str, Mapping], name: str = "", device: str | torch.device = "cpu") -> SVDModels:
    """SVD's modules built from ``{"unet", "vae", "image_encoder"}`` config dicts, frozen, in eval mode.

    On ``device="meta"`` nothing is allocated: the way to fill them from a checkpoint without holding
    a second copy. Elsewhere the weights are random (PyTorch's default init, seeded by the caller).
    ``num_frames`` is the UNet config's.
    """
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.device(device):
        unet = UNetSpatioTemporalConditionModel(**configs["unet"])
        vae = AutoencoderKLTemporalDecoder(**configs["vae"])
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**configs["image_encoder"]))
    use_original_norm_eps(unet)
    for module in (unet, vae, encoder):
        module.requires_grad_(False).eval()
    size = encoder.config.image_size
    processor = CLIPImageProcessor(**dict(FEATURE_EXTRACTOR_CONFIG, size={"shortest_edge": size},
                                          crop_size={"height": size, "width": size}))
    return SVDModels(unet=unet, vae=vae, image_encoder=encoder, feature_extractor=processor,
                     scheduler=EulerDiscreteScheduler(**SCHEDULER_CONFIG), num_frames=unet.config.num_frames,
                     name=name)


def build_svd(num_frames: int = 25, dtype=None, device="cpu") -> SVDModels:
    """The full-size SVD (num_frames 14) or SVD-XT (25) architecture with random weights.

    For benchmarks and shape checks (``device="meta"``): speed and memory do not depend on weight values.
    """
    models = svd_from_configs(svd_configs(num_frames), "svd_xt (random weights)" if num_frames == 25
                              else "svd (random weights)", device)
    for module in (models.unet, models.vae, models.image_encoder):
        module.to(dtype=dtype or torch.float32)
    return models


def build_tiny_svd(seed: int = 0) -> SVDModels:
    """``tiny_svd_configs()`` with random weights from ``seed``: tests and CPU benchmarks."""
    torch.manual_seed(seed)
    return svd_from_configs(tiny_svd_configs(), "tiny")


def _count(keys: Iterable[str], pattern: str) -> int:
    """How many distinct values the first group of ``pattern`` takes over ``keys``."""
    return len({m[1] for k in keys if (m := re.match(pattern, k))})


def configs_from_checkpoint(shapes: Mapping[str, tuple[int, ...]], num_frames: int) -> dict[str, dict]:
    """The ``{"unet", "vae", "image_encoder"}`` configs of a single-file SVD, read off its tensor shapes.

    Args:
        shapes: file key (with its SGM prefix) -> tensor shape.
        num_frames: goes into the UNet config (the file does not say).

    Head counts are not visible in weights: like ComfyUI's model detection, the UNet uses 64 channels per
    head, the image encoder 16 heads at width 1280 (OpenCLIP ViT-H/14), else 64 channels per head.
    Everything the shapes do not tell is the real SVD's (``svd_configs``), so a real file gives exactly
    ``svd_configs(num_frames)``.
    """
    unet = {k[len(UNET_PREFIX):]: v for k, v in shapes.items() if k.startswith(UNET_PREFIX)}
    vae = {k[len(VAE_PREFIX):]: v for k, v in shapes.items() if k.startswith(VAE_PREFIX)}
    clip = {k[len(CLIP_PREFIX):]: v for k, v in shapes.items() if k.startswith(CLIP_PREFIX)}
    levels = _count(unet, r"input_blocks\.(\d+)\.0\.op\.weight") + 1
    per_block = _count(unet, r"input_blocks\.(\d+)\.0\.in_layers\.2\.weight") // levels
    channels, attention = [], []
    for level in range(levels):
        first = 1 + level * (per_block + 1)
        channels.append(unet[f"input_blocks.{first}.0.out_layers.3.weight"][0])
        attention.append(f"input_blocks.{first}.1.proj_in.weight" in unet)
    cross_dim = next(v[1] for k, v in unet.items() if k.endswith("transformer_blocks.0.attn2.to_k.weight"))
    adm = unet["label_emb.0.0.weight"][1]
    unet_config = dict(
        UNET_CONFIG, in_channels=unet["input_blocks.0.0.weight"][1], out_channels=unet["out.2.weight"][0],
        block_out_channels=tuple(channels), layers_per_block=per_block, cross_attention_dim=cross_dim,
        down_block_types=tuple(f"{'CrossAttn' if a else ''}DownBlockSpatioTemporal" for a in attention),
        up_block_types=tuple(f"{'CrossAttn' if a else ''}UpBlockSpatioTemporal" for a in attention[::-1]),
        num_attention_heads=tuple(max(1, c // 64) for c in channels), addition_time_embed_dim=adm // 3,
        projection_class_embeddings_input_dim=adm, num_frames=num_frames)
    vae_levels = _count(vae, r"encoder\.down\.(\d+)\.")
    vae_channels = tuple(vae[f"encoder.down.{i}.block.0.conv1.weight"][0] for i in range(vae_levels))
    vae_config = dict(VAE_CONFIG, down_block_types=("DownEncoderBlock2D",) * vae_levels,
                      block_out_channels=vae_channels,
                      layers_per_block=_count(vae, r"encoder\.down\.0\.block\.(\d+)\."),
                      latent_channels=vae["decoder.conv_in.weight"][1])
    clip_config = image_encoder_config(
        width=clip["conv1.weight"][0], patch=clip["conv1.weight"][2],
        positions=clip["positional_embedding"][0] - 1,  # one per patch, plus the class token
        projection=clip["proj"][1], intermediate=clip["transformer.resblocks.0.mlp.c_fc.weight"][0],
        layers=_count(clip, r"transformer\.resblocks\.(\d+)\."))
    return {"unet": unet_config, "vae": vae_config, "image_encoder": clip_config}


def image_encoder_config(width: int, patch: int, positions: int, projection: int, intermediate: int,
                         layers: int) -> dict:
    """The ``CLIPVisionModelWithProjection`` config of an OpenCLIP ViT image tower of these sizes (``positions``:
    patches, without the class token); 16 heads at width 1280 (ViT-H/14), else 64 channels a head."""
    return dict(IMAGE_ENCODER_CONFIG, hidden_size=width, patch_size=patch, image_size=patch * round(positions ** 0.5),
                projection_dim=projection, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=16 if width == 1280 else max(1, width // 64))


# --- Loading ----------------------------------------------------------------------------------------
def load_svd(path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu", *,
             configs: Mapping[str, Mapping] | None = None) -> SVDModels:
    """Stable Video Diffusion from a single-file ``.safetensors`` checkpoint or a diffusers-format folder.

    Args:
        path: ``svd.safetensors`` / ``svd_xt.safetensors`` (SGM layout, as ComfyUI users have them, fp16
            variants included), or a local StableVideoDiffusionPipeline folder (``model_index.json``,
            ``unet/``, ``vae/``, ``image_encoder/``, ``feature_extractor/``, ``scheduler/``).
        dtype: of the weights (the VAE: ``vae_dtype``); None keeps the checkpoint's (the UNet's dtype for
            a single file).
        device: where the models end up.
        configs: single files only: ``{"unet", "vae", "image_encoder"}`` config dicts to build instead of
            the architecture read off the file (``configs_from_checkpoint``); a UNet config without
            ``num_frames`` takes it from the name (25 with "xt", else 14).

    Returns:
        ``SVDModels``, frozen (``requires_grad=False``), in eval mode. ``num_frames`` is the folder's UNet
        config value when it states one, else from the name.

    Raises:
        ValueError: a pickle format (``.ckpt``, ``.bin``, ...), a file that is not SVD (the message says
            what it looks like), weights that do not fit.
        FileNotFoundError: nothing at ``path``.
    """
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(_pickle_message(path.name, path.suffix))
    if path.is_dir():
        return load_svd_folder(path, dtype, device)
    if not path.is_file():
        raise FileNotFoundError(f"no SVD checkpoint at {path}. {WHERE_SVD_GOES}")
    return load_svd_single_file(path, dtype, device, configs=configs)


def _pickle_message(name: str, suffix: str) -> str:
    return (f"{name}: only safetensors weights are loaded, never pickled {suffix} files (opening a pickle can run "
            "code). Get the .safetensors version of this model: svd.safetensors / svd_xt.safetensors, or a "
            "diffusers folder with *.safetensors weights.")


def load_svd_single_file(path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu", *,
                         configs: Mapping[str, Mapping] | None = None) -> SVDModels:
    """SVD from a single-file SGM checkpoint (``svd.safetensors``, ``svd_xt.safetensors``, fp16 variants).

    The modules are built on the meta device and take the file's tensors as their own (``assign``), each
    tensor cast to ``dtype`` and moved to ``device`` as it is read: the model is never held twice.
    Every key is checked (names and shapes) before any weight is read. Keys outside the three parts
    (OpenCLIP's text tower remnants, the conditioner's copy of the VAE) are ignored, as ComfyUI does.

    Args:
        configs: see ``load_svd``; by default the architecture is read off the file's shapes
            (``configs_from_checkpoint``).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if not is_svd_checkpoint(keys):
                raise ValueError(f"{path.name} is not a Stable Video Diffusion checkpoint: it looks like "
                                 f"{describe_checkpoint(keys)}. {WHERE_SVD_GOES}")
            prefixes = (UNET_PREFIX, VAE_PREFIX, CLIP_PREFIX)
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in keys if k.startswith(prefixes)}
            try:
                models = _empty_models(shapes, path.name, configs)
            except (KeyError, StopIteration, IndexError) as e:  # a weight the architecture is read from is not there
                missing = f"no weight {e.args[0]!r}" if isinstance(e, KeyError) and e.args else "weights are missing"
                raise ValueError(f"{path.name} is damaged or incomplete ({missing}): download svd.safetensors / "
                                 "svd_xt.safetensors again") from None
            parts = _parts(models)
            for part, prefix, module, convert in parts:  # names and shapes first, on meta tensors
                meta = {k[len(prefix):]: torch.empty(v, device="meta")
                        for k, v in shapes.items() if k.startswith(prefix)}
                _check_fits(path.name, part, _convert(path.name, convert, meta), module)
            unet_keys = [k for k in shapes if k.startswith(UNET_PREFIX)]
            dtype = dtype or f.get_tensor(min(unet_keys, key=lambda k: math.prod(shapes[k]))).dtype
            for part, prefix, module, convert in parts:
                part_dtype = vae_dtype(dtype) if module is models.vae else dtype
                state = convert({k[len(prefix):]: _cast(f.get_tensor(k), part_dtype, device)
                                 for k in shapes if k.startswith(prefix)})
                module.load_state_dict(state, strict=True, assign=True)
                del state
    except SafetensorError as e:
        raise ValueError(f"cannot read {path.name} as safetensors ({e}): the file is damaged or incomplete, "
                         "download it again") from e
    create_missing_buffers(models.image_encoder, device)
    for module in (models.unet, models.vae, models.image_encoder):
        module.requires_grad_(False).eval().to(device)  # already in dtype: the VAE warns on a cast
    models.name = path.name
    return models


def _empty_models(shapes: Mapping[str, tuple[int, ...]], name: str, configs) -> SVDModels:
    if configs is None:
        return svd_from_configs(configs_from_checkpoint(shapes, frames_from_name(name)), device="meta")
    configs = dict(configs, unet={"num_frames": frames_from_name(name), **configs["unet"]})
    return svd_from_configs(configs, device="meta")


def _parts(models: SVDModels) -> list[tuple[str, str, torch.nn.Module, Callable[[dict], dict]]]:
    """(what, file prefix, module, SGM -> diffusers state conversion) for each part of a single file."""
    layout = unet_layout(models.unet)
    return [("UNet", UNET_PREFIX, models.unet, lambda s: unet_state_from_sgm(s, **layout)),
            ("VAE", VAE_PREFIX, models.vae, vae_state_from_sgm),
            ("image encoder", CLIP_PREFIX, models.image_encoder, openclip_to_clip_vision)]


def vae_dtype(dtype: torch.dtype) -> torch.dtype:
    """The VAE's dtype for a model loaded in ``dtype``: float32 instead of float16, whose range SVD's VAE
    overflows (its config says ``force_upcast``, which diffusers and ComfyUI honour); bf16 or float32 as
    asked."""
    return torch.float32 if dtype == torch.float16 else dtype


def _cast(tensor: torch.Tensor, dtype: torch.dtype, device) -> torch.Tensor:
    return tensor.to(device=device, dtype=dtype) if tensor.is_floating_point() else tensor.to(device)


def _convert(file: str, convert: Callable[[dict], dict], state: dict) -> dict:
    try:
        return convert(state)
    except KeyError as e:
        raise ValueError(f"{file}: {e.args[0]}. The file is damaged or a modified SVD: download svd.safetensors / "
                         "svd_xt.safetensors again.") from None


def _check_fits(file: str, part: str, state: Mapping[str, torch.Tensor], module: torch.nn.Module) -> None:
    """Raises a ValueError naming a few missing / unexpected / wrongly shaped weights (diffusers names), if any."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} with other shapes (e.g. " + ", ".join(
            f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in wrong[:3]) + ")")
    if problems:
        raise ValueError(f"{file}: the {part} weights do not fit the SVD architecture: {'; '.join(problems)}. The "
                         "file is incomplete or a modified SVD: download svd.safetensors / svd_xt.safetensors again.")


def create_missing_buffers(encoder: torch.nn.Module, device) -> None:
    """Creates the buffers no checkpoint holds (CLIP's ``position_ids``), left empty by the meta build."""
    embeddings = encoder.vision_model.embeddings
    if getattr(embeddings, "position_ids", None) is not None and embeddings.position_ids.is_meta:
        embeddings.position_ids = torch.arange(embeddings.num_positions, device=device).expand((1, -1))


def is_diffusers_svd_folder(folder) -> bool:
    folder = Path(folder)
    return (folder / "model_index.json").is_file() and (folder / "unet").is_dir()


def _weights_kwargs(folder: Path, dtype: torch.dtype | None) -> dict:
    """``from_pretrained`` arguments for one component folder: safetensors only, offline, the fp16
    variant when it exists (unless fp32 was asked for and full-precision files exist too)."""
    if not folder.is_dir():
        raise ValueError(f"{folder.parent} has no {folder.name}/ folder: the diffusers SVD folder is incomplete")
    files = [p.name for p in folder.glob("*.safetensors")]
    if not files:
        pickles = [p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            first = pickles[0]
            raise ValueError(_pickle_message(f"{folder.parent.name}/{folder.name}/{first.name}", first.suffix))
        raise ValueError(f"{folder} has no .safetensors weights: the diffusers folder is incomplete")
    fp16 = [n for n in files if re.search(r"\.fp16(-\d+-of-\d+)?\.safetensors$", n)]
    use_fp16 = bool(fp16) and not (dtype == torch.float32 and len(fp16) < len(files))
    return dict(local_files_only=True, use_safetensors=True, variant="fp16" if use_fp16 else None)


def _weight_files(folder: Path, variant: str | None) -> list[Path]:
    """The safetensors files ``from_pretrained`` reads for one component (the fp16 variant's, or the others)."""
    pattern = "*.fp16*.safetensors" if variant else "*.safetensors"
    return sorted(p for p in folder.glob(pattern) if variant or ".fp16" not in p.name)


def _shown(folder: Path, files: list[Path]) -> str:
    """How a component's weight file(s) are named in messages: ``<model>/unet/<file>``."""
    return f"{folder.parent.name}/{folder.name}/" + " + ".join(p.name for p in files)


def _check_weight_headers(folder: Path, variant: str | None) -> None:
    """Reads the headers of a component's weight files (no weights): a damaged or empty file is named with
    the fix, instead of an error from deep inside diffusers (or a model left on the meta device)."""
    from .files import safetensors_keys

    for file in _weight_files(folder, variant):
        safetensors_keys(file, shown=_shown(folder, [file]))


def _check_complete(folder: Path, variant: str | None, module: torch.nn.Module) -> None:
    """diffusers leaves weights its files lack on the meta device ("Cannot copy out of meta tensor" later):
    name the file(s) and the fix instead."""
    missing = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if missing:
        raise ValueError(f"{_shown(folder, _weight_files(folder, variant))} is damaged or incomplete "
                         f"({len(missing)} weights are missing, e.g. {missing[0]}): download it again")


def _stored_dtype(folder: Path, variant: str | None) -> torch.dtype:
    """The dtype of a component's stored weights (read from one small tensor)."""
    from safetensors import safe_open

    file = _weight_files(folder, variant)[0]
    with safe_open(str(file), framework="pt") as f:
        keys = list(f.keys())
        return f.get_tensor(min(keys, key=lambda k: math.prod(tuple(f.get_slice(k).get_shape())))).dtype


def load_svd_folder(path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> SVDModels:
    """SVD from a local diffusers StableVideoDiffusionPipeline folder (see ``load_svd``).

    Each component loads straight into ``dtype`` (None: the stored UNet weights' dtype; the VAE:
    ``vae_dtype``).
    """
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    path = Path(path)
    if not is_diffusers_svd_folder(path):
        raise ValueError(f"{path} is not a diffusers Stable Video Diffusion folder (it needs model_index.json and "
                         f"unet/, vae/, image_encoder/...). {WHERE_SVD_GOES}")
    kwargs = {sub: _weights_kwargs(path / sub, dtype) for sub in ("unet", "vae", "image_encoder")}
    for sub, options in kwargs.items():
        _check_weight_headers(path / sub, options["variant"])
    dtype = dtype or _stored_dtype(path / "unet", kwargs["unet"]["variant"])
    try:
        unet = UNetSpatioTemporalConditionModel.from_pretrained(path / "unet", torch_dtype=dtype, **kwargs["unet"])
        vae = AutoencoderKLTemporalDecoder.from_pretrained(path / "vae", torch_dtype=vae_dtype(dtype), **kwargs["vae"])
        encoder = CLIPVisionModelWithProjection.from_pretrained(path / "image_encoder", **_transformers_dtype(dtype),
                                                                **kwargs["image_encoder"])
        processor = CLIPImageProcessor.from_pretrained(path / "feature_extractor", local_files_only=True)
        scheduler = EulerDiscreteScheduler.from_pretrained(path / "scheduler", local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load SVD from {path}: {e}") from e
    for sub, module in (("unet", unet), ("vae", vae), ("image_encoder", encoder)):
        _check_complete(path / sub, kwargs[sub]["variant"], module)
    use_original_norm_eps(unet)
    for module in (unet, vae, encoder):
        module.requires_grad_(False).eval().to(device)  # already in dtype: the VAE warns on a cast
    stated = json.loads((path / "unet" / "config.json").read_text()).get("num_frames")
    return SVDModels(unet=unet, vae=vae, image_encoder=encoder, feature_extractor=processor, scheduler=scheduler,
                     num_frames=int(stated or frames_from_name(path.name)), name=path.name)


def _transformers_dtype(dtype: torch.dtype) -> dict:
    """transformers renamed ``torch_dtype`` to ``dtype`` in 4.56 (the old name now warns)."""
    import transformers
    from packaging.version import Version

    return {"dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype": dtype}


def save_svd_folder(models: SVDModels, folder, variant: str | None = None) -> None:
    """Writes ``SVDModels`` as a diffusers StableVideoDiffusionPipeline folder (safetensors; ``variant="fp16"``
    names the weight files ``*.fp16.safetensors`` as the published fp16 folders do)."""
    from diffusers import StableVideoDiffusionPipeline

    StableVideoDiffusionPipeline(vae=models.vae, image_encoder=models.image_encoder, unet=models.unet,
                                 scheduler=models.scheduler, feature_extractor=models.feature_extractor
                                 ).save_pretrained(folder, safe_serialization=True, variant=variant)
