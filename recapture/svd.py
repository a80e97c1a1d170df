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


def use_original_norm_eps(unet) -> None:
    """Sets the res blocks' GroupNorm eps to the original model's 1e-5.

    diffusers builds some of SVD's res-block norms with eps 1e-6; the original implementation (and
    ComfyUI) use 1e-5, which is what the released weights were trained with.
    """
    import torch

    for name, module in unet.named_modules():
        if ".resnets." in name and isinstance(module, torch.nn.GroupNorm):
            module.eps = 1e-5


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
    """Stable Video Diffusion from a single-file checkpoint (see ``load_svd_single_file``) or a local
    diffusers-format folder (StableVideoDiffusionPipeline layout).

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
        return load_svd_single_file(path, dtype, device)
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
    use_original_norm_eps(unet)
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
    use_original_norm_eps(unet)
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
    use_original_norm_eps(unet)
    vae = AutoencoderKLTemporalDecoder(**dict(VAE_CONFIG, block_out_channels=(32, 32, 32, 32)))
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
        patch_size=8, projection_dim=32))
    processor = CLIPImageProcessor(**dict(FEATURE_EXTRACTOR_CONFIG, size={"shortest_edge": 32},
                                          crop_size={"height": 32, "width": 32}))
    for module in (unet, vae, encoder):
        module.eval().requires_grad_(False)
    return SVDModels(unet=unet, vae=vae, image_encoder=encoder, feature_extractor=processor,
                     scheduler=EulerDiscreteScheduler(**SCHEDULER_CONFIG), num_frames=4, name="tiny")


# --- Single-file checkpoints: VAE and OpenCLIP names -----------------------------------------------
_VAE_ATTENTION = {"norm.": "group_norm.", "q.": "to_q.", "k.": "to_k.", "v.": "to_v.", "proj_out.": "to_out.0."}
_VAE_TIME_STACK = {"in_layers.0.": "norm1.", "in_layers.2.": "conv1.", "out_layers.0.": "norm2.",
                   "out_layers.3.": "conv2."}


def _vae_resnet(rest: str, temporal_decoder: bool) -> str:
    rest = rest.replace("nin_shortcut.", "conv_shortcut.")
    if not temporal_decoder:
        return rest
    if rest.startswith("time_stack."):
        rest = rest[len("time_stack."):]
        for old, new in _VAE_TIME_STACK.items():
            if rest.startswith(old):
                return "temporal_res_block." + new + rest[len(old):]
    if rest.startswith("mix_factor"):
        return "time_mixer." + rest
    return "spatial_res_block." + rest


def vae_sgm_to_diffusers(name: str, levels: int = 4) -> str:
    """An SGM (``first_stage_model.``-less) VAE key of SVD -> ``AutoencoderKLTemporalDecoder``'s key.

    The encoder is the standard LDM one; the decoder's res blocks carry a temporal branch
    (``time_stack``) and its output conv a temporal conv (``conv_out.time_mix_conv``). SGM counts the
    decoder's levels from the lowest resolution up, diffusers from the top.
    """
    side, _, rest = name.partition(".")
    video = side == "decoder"
    if rest.startswith("norm_out."):
        return f"{side}.conv_norm_out.{rest[len('norm_out.'):]}"
    if rest.startswith("conv_out.time_mix_conv."):
        return f"{side}.time_conv_out.{rest[len('conv_out.time_mix_conv.'):]}"
    if m := re.match(r"mid\.block_(\d)\.(.*)", rest):
        return f"{side}.mid_block.resnets.{int(m[1]) - 1}.{_vae_resnet(m[2], video)}"
    if m := re.match(r"mid\.attn_1\.(.*)", rest):
        for old, new in _VAE_ATTENTION.items():
            if m[1].startswith(old):
                return f"{side}.mid_block.attentions.0.{new}{m[1][len(old):]}"
    if m := re.match(r"(down|up)\.(\d+)\.block\.(\d+)\.(.*)", rest):
        level = int(m[2]) if m[1] == "down" else levels - 1 - int(m[2])
        return f"{side}.{m[1]}_blocks.{level}.resnets.{m[3]}.{_vae_resnet(m[4], video)}"
    if m := re.match(r"(down|up)\.(\d+)\.(downsample|upsample)\.conv\.(.*)", rest):
        level = int(m[2]) if m[1] == "down" else levels - 1 - int(m[2])
        return f"{side}.{m[1]}_blocks.{level}.{m[3]}rs.0.conv.{m[4]}"
    if rest.startswith(("conv_in.", "conv_out.")):
        return name
    raise KeyError(f"{name!r} is not a key of SVD's VAE")


def openclip_to_clip_vision(state: dict) -> dict:
    """OpenCLIP ``visual.*`` weights (prefix removed) -> ``CLIPVisionModelWithProjection`` weights.

    OpenCLIP keeps q, k, v in one ``in_proj`` matrix and the projection as ``x @ proj``; transformers
    splits the first and stores the second transposed as a Linear.
    """
    out = {}
    rename = {"conv1.weight": "vision_model.embeddings.patch_embedding.weight",
              "class_embedding": "vision_model.embeddings.class_embedding",
              "positional_embedding": "vision_model.embeddings.position_embedding.weight"}
    for key, value in state.items():
        if key in rename:
            out[rename[key]] = value
        elif key == "proj":
            out["visual_projection.weight"] = value.T.contiguous()
        elif key.startswith(("ln_pre.", "ln_post.")):
            target = "pre_layrnorm" if key.startswith("ln_pre.") else "post_layernorm"  # sic: transformers' name
            out[f"vision_model.{target}.{key.split('.', 1)[1]}"] = value
        elif m := re.match(r"transformer\.resblocks\.(\d+)\.(.*)", key):
            layer, rest = f"vision_model.encoder.layers.{m[1]}", m[2]
            if rest.startswith("attn.in_proj_"):
                kind = rest[len("attn.in_proj_"):]
                for name, part in zip(("q", "k", "v"), value.chunk(3, dim=0)):
                    out[f"{layer}.self_attn.{name}_proj.{kind}"] = part.contiguous()
            else:
                for old, new in (("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("attn.out_proj.", "self_attn.out_proj."),
                                 ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2.")):
                    if rest.startswith(old):
                        out[f"{layer}.{new}{rest[len(old):]}"] = value
                        break
                else:
                    raise KeyError(f"{key!r} is not a key of an OpenCLIP vision tower")
        else:
            raise KeyError(f"{key!r} is not a key of an OpenCLIP vision tower")
    return out


UNET_PREFIX, VAE_PREFIX, CLIP_PREFIX = "model.diffusion_model.", "first_stage_model.", \
    "conditioner.embedders.0.open_clip.model.visual."


def describe_checkpoint(keys) -> str:
    """What a checkpoint looks like, from its key names (for the error when it is not SVD)."""
    keys = list(keys)
    has = lambda part: any(part in k for k in keys)  # noqa: E731
    if has(".lora_") or has("lora_down") or has("lora_up"):
        return "a LoRA file"
    if has("double_blocks.") or has("single_blocks."):
        return "a Flux-style transformer checkpoint"
    if has("conditioner.embedders.1."):
        return "an SDXL checkpoint"
    if has("cond_stage_model."):
        return "a Stable Diffusion 1.x/2.x checkpoint"
    if has(UNET_PREFIX) and not has("time_stack"):
        return "an image diffusion checkpoint without temporal layers"
    if keys and all(k.startswith(("encoder.", "decoder.", "quant_conv", "post_quant_conv")) for k in keys):
        return "a VAE on its own"
    if has("input_blocks.") and not has(UNET_PREFIX):
        return "a UNet on its own (no VAE or image encoder)"
    return "an unknown model"


def _count(keys, pattern: str) -> int:
    """How many distinct values the first group of ``pattern`` takes over ``keys``."""
    return len({m[1] for k in keys if (m := re.match(pattern, k))})


def architecture_from_checkpoint(parts: dict, num_frames: int):
    """Builds empty (meta) SVD modules whose sizes are read off a single-file checkpoint's tensors.

    Attention head counts are not visible in weights: like ComfyUI's model detection, the UNet uses
    64 channels per head, and the image encoder 16 heads at width 1280 (OpenCLIP ViT-H/14), else 64 per head.
    """
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from .types import SVDModels

    unet, vae, clip = parts[UNET_PREFIX], parts[VAE_PREFIX], parts[CLIP_PREFIX]
    levels = _count(unet, r"input_blocks\.(\d+)\.0\.op\.weight") + 1
    per_block = _count(unet, r"input_blocks\.(\d+)\.0\.in_layers\.2\.weight") // levels
    channels, attention = [], []
    for level in range(levels):
        first = 1 + level * (per_block + 1)
        channels.append(unet[f"input_blocks.{first}.0.out_layers.3.weight"].shape[0])
        attention.append(f"input_blocks.{first}.1.proj_in.weight" in unet)
    cross_dim = next(v.shape[1] for k, v in unet.items() if k.endswith("transformer_blocks.0.attn2.to_k.weight"))
    adm = unet["label_emb.0.0.weight"].shape[1]
    unet_config = dict(
        in_channels=unet["input_blocks.0.0.weight"].shape[1], out_channels=unet["out.2.weight"].shape[0],
        block_out_channels=tuple(channels), layers_per_block=per_block, cross_attention_dim=cross_dim,
        down_block_types=tuple("CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal" for a in attention),
        up_block_types=tuple("CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal" for a in attention[::-1]),
        num_attention_heads=tuple(c // 64 for c in channels), addition_time_embed_dim=adm // 3,
        projection_class_embeddings_input_dim=adm, num_frames=num_frames)
    vae_levels = _count(vae, r"encoder\.down\.(\d+)\.")
    vae_config = dict(VAE_CONFIG, block_out_channels=tuple(vae[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]
                                                           for i in range(vae_levels)),
                      down_block_types=("DownEncoderBlock2D",) * vae_levels,
                      layers_per_block=_count(vae, r"encoder\.down\.0\.block\.(\d+)\."),
                      latent_channels=vae["decoder.conv_in.weight"].shape[1])
    width, patch = clip["conv1.weight"].shape[0], clip["conv1.weight"].shape[2]
    positions = clip["positional_embedding"].shape[0] - 1
    clip_config = dict(IMAGE_ENCODER_CONFIG, hidden_size=width, patch_size=patch,
                       image_size=patch * round(positions ** 0.5), projection_dim=clip["proj"].shape[1],
                       intermediate_size=clip["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                       num_hidden_layers=_count(clip, r"transformer\.resblocks\.(\d+)\."),
                       num_attention_heads=16 if width == 1280 else max(1, width // 64))
    with torch.device("meta"):  # sizes only: the checkpoint's tensors are assigned later
        unet_model = UNetSpatioTemporalConditionModel(**unet_config)
        vae_model = AutoencoderKLTemporalDecoder(**vae_config)
        clip_model = CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_config))
    size = clip_config["image_size"]
    models = SVDModels(unet=unet_model, vae=vae_model, image_encoder=clip_model,
                       feature_extractor=CLIPImageProcessor(**dict(FEATURE_EXTRACTOR_CONFIG, size={"shortest_edge": size},
                                                                   crop_size={"height": size, "width": size})),
                       scheduler=EulerDiscreteScheduler(**SCHEDULER_CONFIG), num_frames=num_frames, name="")
    use_original_norm_eps(models.unet)
    return models


def load_svd_single_file(path, dtype=None, device="cpu", architecture=None):
    """SVD from a single-file SGM checkpoint (``svd.safetensors``, ``svd_xt.safetensors``, fp16 variants).

    Args:
        architecture: makes the empty ``SVDModels`` to fill; by default they are sized from the file
            (``architecture_from_checkpoint``), 25 frames when the file name contains "xt", else 14.
    """
    from pathlib import Path

    import torch
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            looks_like_svd = any(k.startswith(UNET_PREFIX) and "time_stack" in k for k in keys) and \
                any(k.startswith(VAE_PREFIX) for k in keys) and any(k.startswith(CLIP_PREFIX) for k in keys)
            if not looks_like_svd:
                raise ValueError(f"{path.name} is not a Stable Video Diffusion checkpoint: it looks like "
                                 f"{describe_checkpoint(keys)}. Put svd.safetensors or svd_xt.safetensors into "
                                 "models/checkpoints/")
            parts = {prefix: {k[len(prefix):]: f.get_tensor(k) for k in keys if k.startswith(prefix)}
                     for prefix in (UNET_PREFIX, VAE_PREFIX, CLIP_PREFIX)}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"cannot read {path.name} as safetensors: {e}") from e
    num_frames = 25 if "xt" in path.name.lower() else 14
    models = architecture() if architecture else architecture_from_checkpoint(parts, num_frames)
    layout = unet_layout(models.unet)
    unet_names = {unet_diffusers_to_sgm(k, **layout): k for k in models.unet.state_dict()}
    unet_state = {unet_names.get(k, "unknown:" + k): v for k, v in parts[UNET_PREFIX].items()}
    vae_state = {}
    vae_shapes = {k: v.shape for k, v in models.vae.state_dict().items()}
    for key, value in parts[VAE_PREFIX].items():
        name = vae_sgm_to_diffusers(key)
        vae_state[name] = value.reshape(vae_shapes[name]) if name in vae_shapes else value  # 1x1 convs -> Linear
    if "quant_conv.weight" not in vae_state:  # SVD's file has none: it is the identity
        channels = vae_shapes["quant_conv.weight"][0]
        vae_state["quant_conv.weight"] = torch.eye(channels).reshape(channels, channels, 1, 1)
        vae_state["quant_conv.bias"] = torch.zeros(channels)
    clip_state = openclip_to_clip_vision(parts[CLIP_PREFIX])
    for part, module, state in (("UNet", models.unet, unet_state), ("VAE", models.vae, vae_state),
                                ("image encoder", models.image_encoder, clip_state)):
        expected = set(module.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(f"{path.name}: the {part} weights do not fit SVD's architecture ({len(missing)} missing, "
                             f"e.g. {missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})")
        module.load_state_dict(state, strict=True, assign=True)
        if module is models.image_encoder and module.vision_model.embeddings.position_ids.is_meta:
            # a buffer no checkpoint holds: made anew when the modules were built on the meta device
            embeddings = module.vision_model.embeddings
            embeddings.position_ids = torch.arange(embeddings.num_positions).expand((1, -1))
        module.requires_grad_(False).eval().to(device=device, dtype=dtype or next(iter(state.values())).dtype)
    models.name = path.name
    return models


def save_svd_folder(models, folder) -> None:
    """Writes ``SVDModels`` as a diffusers StableVideoDiffusionPipeline folder (safetensors)."""
    from diffusers import StableVideoDiffusionPipeline

    StableVideoDiffusionPipeline(vae=models.vae, image_encoder=models.image_encoder, unet=models.unet,
                                 scheduler=models.scheduler, feature_extractor=models.feature_extractor
                                 ).save_pretrained(folder, safe_serialization=True)
