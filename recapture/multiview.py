"""Cameras for the multi-view anchor: our camera paths in the terms Stable Virtual Camera takes.

ReCapture's second Stage-1 path makes each anchor frame with a multi-view diffusion model from the
source frame and the new camera (docs/multiview.md). Our ``CameraPath`` poses map the new camera to
its source camera (OpenCV axes: +x right, +y down, +z forward), so with the source camera as the
world they are camera-to-world matrices already. The model wants three things from them:

- intrinsics normalised by the image size, with pixel *edges* at 0 (``recapture.geometry`` puts pixel
  centres at integers: a shift of half a pixel);
- translations in its own scene scale, where an orbited subject sits ``SEVA_SUBJECT_DISTANCE`` from the
  cameras: we scale by the clip's subject distance (the pivot), so "15 % of the subject distance"
  moves the camera as far as in the point-cloud path;
- a Plücker ray map per view at latent resolution, relative to the first view of each pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from einops import rearrange

from .geometry import focal_from_fov, invert_rigid

SEVA_SUBJECT_DISTANCE = 2.0  # the model's scene scale: cameras are normalised so an orbit's centre is 2 away
LATENT_FACTOR = 8  # the VAE's downsampling: Plücker maps are made at latent resolution


def seva_intrinsics(fov_deg: torch.Tensor, height: int, width: int, source_fov_deg: float = math.nan) -> torch.Tensor:
    """Normalised pinhole intrinsics ``(V, 3, 3)`` for horizontal fields of view ``fov_deg`` ``(V,)`` (NaN:
    the source camera's, ``source_fov_deg``, as in a ``CameraPath``): focal lengths in image widths /
    heights (square pixels), principal point at the image centre ``(0.5, 0.5)`` with pixel edges at 0 and 1.

    >>> seva_intrinsics(torch.tensor([90.0, math.nan]), 16, 32, source_fov_deg=60.0)[:, 0]
    tensor([[0.5000, 0.0000, 0.5000],
            [0.8660, 0.0000, 0.5000]])
    """
    fov_deg = torch.where(torch.isnan(fov_deg), torch.tensor(float(source_fov_deg)), fov_deg.float())
    if not torch.isfinite(fov_deg).all():
        raise ValueError("the camera path keeps the source camera's field of view: give source_fov_deg")
    focal = focal_from_fov(fov_deg, float(width))  # pixels
    k = torch.zeros(len(fov_deg), 3, 3)
    k[:, 0, 0], k[:, 1, 1] = focal / width, focal / height
    k[:, 0, 2] = k[:, 1, 2] = 0.5
    k[:, 2, 2] = 1.0
    return k


def seva_cameras(camera_to_world: torch.Tensor, subject_distance: float) -> torch.Tensor:
    """Camera-to-world poses ``(V, 4, 4)`` (OpenCV, in scene units) with their translations scaled so the
    subject, ``subject_distance`` scene units from the source camera, sits ``SEVA_SUBJECT_DISTANCE`` from
    it in the model's scale. Rotations are unchanged.

    >>> pose = torch.eye(4)[None].clone(); pose[0, 0, 3] = 0.5
    >>> seva_cameras(pose, 4.0)[0, :3, 3]
    tensor([0.2500, 0.0000, 0.0000])
    """
    if not subject_distance > 0:
        raise ValueError(f"the subject distance must be positive, got {subject_distance}")
    scaled = camera_to_world.clone()
    scaled[:, :3, 3] *= SEVA_SUBJECT_DISTANCE / subject_distance
    return scaled


def plucker_map(camera_to_world: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Each view's rays as Plücker coordinates at latent resolution, relative to the first view.

    View ``i``'s pose in the first view's frame is ``M_i = inv(P_0) @ P_i`` with rotation ``R_i`` and
    centre ``o_i``. A latent pixel ``(u, v)`` (centre at ``u + 0.5``, ``v + 0.5``) has the unit direction
    ``d = normalize(R_i @ inv(K_i) @ (u + 0.5, v + 0.5, 1))``, ``K_i`` being ``intrinsics`` scaled to the
    latent size, and the moment ``m = o_i x d``; the map holds ``(d, m)``.

    Args:
        camera_to_world: ``(V, 4, 4)`` OpenCV poses (e.g. ``seva_cameras``).
        intrinsics: ``(V, 3, 3)`` normalised intrinsics (``seva_intrinsics``).
        height, width: the image size in pixels, multiples of ``LATENT_FACTOR``.

    Returns:
        ``(V, 6, height / 8, width / 8)``: channels ``d_x, d_y, d_z, m_x, m_y, m_z``.
    """
    if height % LATENT_FACTOR or width % LATENT_FACTOR:
        raise ValueError(f"the image size must be a multiple of {LATENT_FACTOR}, got {width}x{height}")
    h, w = height // LATENT_FACTOR, width // LATENT_FACTOR
    poses = camera_to_world.double()
    relative = invert_rigid(poses[:1]) @ poses
    latent = intrinsics.double() * torch.tensor([w, h, 1.0], dtype=torch.float64)[None, :, None]
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                          indexing="ij")
    pixels = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)  # (h*w, 3)
    rays = torch.linalg.inv(latent) @ pixels.T  # (V, 3, h*w) in each camera
    directions = torch.nn.functional.normalize(relative[:, :3, :3] @ rays, dim=1)
    moments = torch.linalg.cross(relative[:, :3, 3:].expand_as(directions), directions, dim=1)
    return torch.cat([directions, moments], 1).reshape(len(poses), 6, h, w).float()


# --- The anchor, one source frame at a time ------------------------------------------------------------
SEVA_LATENT_SCALE = 0.18215  # SD 2.x's image VAE: latents are its posterior mean times this
NEAR_INPUT_DEGREES = 10.0  # a view turned less than this from an input, at its position, is guided like one


@dataclass
class MultiViewModels:
    """Stable Virtual Camera's parts: the multi-view UNet (``recapture.seva.SevaUNet``), SD 2.x's image VAE
    (diffusers ``AutoencoderKL``), the OpenCLIP ViT-H image encoder (``CLIPVisionModelWithProjection``)
    and its preprocessing (``CLIPImageProcessor``: size, mean, std)."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    image_encoder: torch.nn.Module
    feature_extractor: object
    name: str = ""


@dataclass
class MultiViewConfig:
    """One multi-view anchor: the sampler's settings (docs/multiview.md; defaults are the reference's)."""

    steps: int = 50
    guidance: float = 2.0  # classifier-free guidance of the new views
    guidance_near_input: float = 1.2  # ... and of views that look from where the source frame looks
    views_per_pass: int = 21  # the model's training length: the new view is repeated to fill a pass
    seed: int = 0


@torch.no_grad()
def encode_views(models: MultiViewModels, frames: torch.Tensor) -> torch.Tensor:
    """``(N, H, W, 3)`` in 0..1 -> latents ``(N, 4, H/8, W/8)`` (the posterior mean, scaled), a frame at a time."""
    vae = models.vae
    latents = [vae.encode(rearrange(f[None], "n h w c -> n c h w").to(vae.device, vae.dtype) * 2 - 1).latent_dist.mean
               for f in frames]
    return torch.cat(latents).float() * SEVA_LATENT_SCALE


@torch.no_grad()
def decode_views(models: MultiViewModels, latents: torch.Tensor) -> torch.Tensor:
    """Latents ``(N, 4, h, w)`` -> ``(N, 8h, 8w, 3)`` in 0..1 on the host, a frame at a time."""
    vae = models.vae
    frames = [((vae.decode(z[None].to(vae.device, vae.dtype) / SEVA_LATENT_SCALE).sample.float() + 1) / 2).clamp(0, 1)
              .cpu() for z in latents]
    return rearrange(torch.cat(frames), "n c h w -> n h w c")


@torch.no_grad()
def image_context(models: MultiViewModels, frames: torch.Tensor) -> torch.Tensor:
    """The CLIP image embedding of each frame ``(N, H, W, 3)`` in 0..1 -> ``(N, 1, D)``, preprocessed as
    SVD's (the same recipe: ``recapture.svd_conditioning.clip_input``)."""
    from .svd_conditioning import clip_input

    encoder = models.image_encoder
    images = rearrange(frames, "n h w c -> n c h w").to(encoder.device, torch.float32) * 2 - 1
    pixels = clip_input(images, models.feature_extractor).to(encoder.dtype)
    return encoder(pixel_values=pixels).image_embeds.float()[:, None]


def near_input(camera_to_world: torch.Tensor) -> torch.Tensor:
    """``(V,)`` bool: views at the first view's position, turned less than ``NEAR_INPUT_DEGREES`` from it."""
    relative = invert_rigid(camera_to_world[:1].double()) @ camera_to_world.double()
    cos = ((relative[:, 0, 0] + relative[:, 1, 1] + relative[:, 2, 2] - 1) / 2).clamp(-1, 1)
    return (torch.rad2deg(torch.arccos(cos)) < NEAR_INPUT_DEGREES) & (relative[:, :3, 3].norm(dim=1) < 1e-5)


def multiview_anchor(models: MultiViewModels, frames: torch.Tensor, path, subject_distance: float,
                     source_fov_deg: float, config: MultiViewConfig | None = None,
                     on_step: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ReCapture's multi-view anchor: each frame seen from its new camera, generated from that source frame.

    Frame ``i`` is one pass of the model: the source frame as the input view (identity camera) and the new
    camera ``path.poses[i]`` as the view to generate, repeated to ``config.views_per_pass`` views as the
    reference fills its passes. Cameras are in the model's scale (``seva_cameras`` with the clip's
    ``subject_distance``), so an amount means what it means for the point-cloud anchor.

    Args:
        frames: ``(N, H, W, 3)`` source frames in 0..1, sides multiples of 64.
        path: a ``CameraPath`` of ``N`` cameras (new camera -> source camera).
        on_step: called with ``(frame, step)`` after each denoising step (progress and Cancel).

    Returns:
        the anchor ``(N, H, W, 3)`` in 0..1 and its validity mask ``(N, H, W)``: all ones, every pixel is
        generated (Stage 2 repairs what the frames disagree on).
    """
    from .seva_sampling import ViewConditions, sample_views, view_guidance

    config = config or MultiViewConfig()
    n, height, width, _ = frames.shape
    if path.num_frames != n:
        raise ValueError(f"the camera path has {path.num_frames} cameras for {n} frames: give one per frame")
    if height % 64 or width % 64:
        raise ValueError(f"the frame size must be a multiple of 64, got {width}x{height}")
    device = next(models.unet.parameters()).device  # the sampler's state stays float32; the UNet casts
    generator = torch.Generator("cpu").manual_seed(config.seed)
    views = max(2, config.views_per_pass)
    anchor = []
    for i in range(n):
        poses = torch.cat([torch.eye(4)[None], path.poses[i : i + 1].float().expand(views - 1, 4, 4)])
        fov = torch.cat([torch.tensor([float(source_fov_deg)]), path.fov_deg[i : i + 1].float().expand(views - 1)])
        cameras = seva_cameras(poses, subject_distance)
        rays = plucker_map(cameras, seva_intrinsics(fov, height, width, source_fov_deg), height, width)
        clean = encode_views(models, frames[i : i + 1]).expand(views, -1, -1, -1)
        is_input = torch.zeros(views, dtype=torch.bool)
        is_input[0] = True
        conditions = ViewConditions(clean.to(device), is_input.to(device),
                                    image_context(models, frames[i : i + 1]).expand(views, -1, -1).to(device),
                                    rays.to(device))
        guidance = view_guidance(config.guidance, config.guidance_near_input, is_input, near_input(cameras))
        latents = sample_views(models.unet, conditions, guidance.to(device), config.steps,
                               lambda shape: torch.randn(shape, generator=generator).to(device),
                               None if on_step is None else lambda step, i=i: on_step(i, step))
        anchor.append(decode_views(models, latents[1:2].float()))
    return torch.cat(anchor), torch.ones(n, height, width)


# --- Loading the image VAE from the files ComfyUI users have ---------------------------------------------
LDM_VAE_PREFIX = "first_stage_model."  # inside a whole SD 1.x/2.x checkpoint


def load_image_vae(path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"):
    """SD 2.x's image VAE (the one Stable Virtual Camera works in) as a diffusers ``AutoencoderKL``, from a
    ComfyUI models/vae file (LDM names: ``encoder.*``, ``decoder.*``, ``quant_conv``...) or a whole SD
    1.x/2.x checkpoint (the same under ``first_stage_model.``). The architecture is read off the shapes.

    Raises:
        ValueError: a pickle, SVD's video VAE, or a file that is not an image VAE (the message says why).
    """
    from pathlib import Path

    from diffusers import AutoencoderKL
    from safetensors import SafetensorError, safe_open

    from .svd import PICKLE_SUFFIXES, describe_checkpoint, vae_state_from_sgm

    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(f"{path.name}: only safetensors weights are loaded, never pickled {path.suffix} files "
                         "(opening a pickle can run code): use a .safetensors VAE")
    if not path.is_file():
        raise FileNotFoundError(f"no VAE at {path}: put SD 2.x's VAE (a .safetensors file) in models/vae")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            prefix = LDM_VAE_PREFIX if any(k.startswith(LDM_VAE_PREFIX + "encoder.") for k in keys) else ""
            names = [k for k in keys if k.startswith(prefix) and k[len(prefix):].split(".")[0] in
                     ("encoder", "decoder", "quant_conv", "post_quant_conv")]
            if any("time_stack" in k for k in names):
                raise ValueError(f"{path.name} holds SVD's video VAE; Stable Virtual Camera works in SD 2.x's image "
                                 "VAE: pick a models/vae file such as vae-ft-mse-840000-ema-pruned.safetensors")
            if not any(k.endswith("encoder.conv_in.weight") for k in names) or \
                    not any(k.endswith("decoder.conv_out.weight") for k in names):
                raise ValueError(f"{path.name} is not an image VAE: it looks like {describe_checkpoint(keys)}")
            state = {k[len(prefix):]: f.get_tensor(k) for k in names}
    except SafetensorError as e:
        raise ValueError(f"cannot read {path.name} as safetensors ({e}): the file is damaged or incomplete") from e
    levels = len({k.split(".")[2] for k in state if k.startswith("encoder.down.")})
    widths = tuple(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] for i in range(levels))
    config = dict(down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
                  block_out_channels=widths, latent_channels=state["encoder.conv_out.weight"].shape[0] // 2,
                  layers_per_block=len({k.split(".")[4] for k in state if k.startswith("encoder.down.0.block.")}),
                  scaling_factor=SEVA_LATENT_SCALE)
    dtype = dtype or state["encoder.conv_in.weight"].dtype
    converted = {k: v.to(device, dtype) for k, v in vae_state_from_sgm(state, temporal_decoder=False).items()}
    config.update(use_quant_conv="quant_conv.weight" in converted,  # LDM files have both; SGM-style ones neither
                  use_post_quant_conv="post_quant_conv.weight" in converted)
    with torch.device("meta"):
        vae = AutoencoderKL(**config)
    try:
        vae.load_state_dict(converted, strict=True, assign=True)
    except RuntimeError as e:
        raise ValueError(f"{path.name} does not fit an SD-style image VAE ({str(e).splitlines()[0]}): is it damaged?") from e
    return vae.requires_grad_(False).eval()


def load_image_encoder(path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"):
    """The OpenCLIP ViT-H/14 image encoder as ``CLIPVisionModelWithProjection``, from a ComfyUI
    models/clip_vision file (transformers names ``vision_model.*`` or OpenCLIP's ``visual.*``) or from SVD's
    single file (its image encoder is the same ViT-H/14). Text towers in the file are ignored.

    Raises:
        ValueError: a pickle, or a file without a CLIP image tower.
    """
    from pathlib import Path

    from safetensors import SafetensorError, safe_open
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from .svd import (CLIP_PREFIX, PICKLE_SUFFIXES, create_missing_buffers, describe_checkpoint, image_encoder_config,
                      openclip_to_clip_vision)

    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(f"{path.name}: only safetensors weights are loaded, never pickled {path.suffix} files "
                         "(opening a pickle can run code): use a .safetensors CLIP vision file")
    if not path.is_file():
        raise FileNotFoundError(f"no image encoder at {path}: put CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors in "
                                "models/clip_vision, or use SVD's checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            openclip = next((p for p in (CLIP_PREFIX, "visual.") if any(k.startswith(p + "conv1.") for k in keys)),
                            None)
            if openclip is not None:
                state = openclip_to_clip_vision({k[len(openclip):]: f.get_tensor(k) for k in keys
                                                 if k.startswith(openclip)})
            elif any(k.startswith("vision_model.embeddings.") for k in keys):
                state = {k: f.get_tensor(k) for k in keys if k.startswith(("vision_model.", "visual_projection."))}
            else:
                raise ValueError(f"{path.name} holds no CLIP image encoder: it looks like {describe_checkpoint(keys)}")
    except SafetensorError as e:
        raise ValueError(f"cannot read {path.name} as safetensors ({e}): the file is damaged or incomplete") from e
    state.pop("vision_model.embeddings.position_ids", None)  # a buffer some files carry
    patch = state["vision_model.embeddings.patch_embedding.weight"].shape
    config = image_encoder_config(
        width=patch[0], patch=patch[2], positions=state["vision_model.embeddings.position_embedding.weight"].shape[0] - 1,
        projection=state["visual_projection.weight"].shape[0],
        intermediate=state["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        layers=len({k.split(".")[3] for k in state if k.startswith("vision_model.encoder.layers.")}))
    with torch.device("meta"):
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**config))
    dtype = dtype or state["vision_model.embeddings.patch_embedding.weight"].dtype
    try:
        encoder.load_state_dict({k: v.to(device, dtype) for k, v in state.items()}, strict=True, assign=True)
    except RuntimeError as e:
        raise ValueError(f"{path.name} does not fit a CLIP ViT image encoder ({str(e).splitlines()[0]}): is it "
                         "damaged?") from e
    create_missing_buffers(encoder, device)
    return encoder.requires_grad_(False).eval()
