"""Stage 2a: fine-tune SVD on one video with ReCapture's masked temporal LoRA and spatial LoRA.

EDM with v-prediction and sigma_data = 1, exactly as diffusers' SVD sampler (EulerDiscreteScheduler,
v_prediction, continuous timesteps) calls the UNet:

    c_in = 1 / sqrt(s^2 + 1)      c_skip = 1 / (s^2 + 1)      c_out = -s / sqrt(s^2 + 1)
    c_noise = 0.25 ln(s)          D(x; s) = c_skip x + c_out F(c_in x, c_noise)

with ``x = x0 + s n`` and loss weight ``(s^2 + 1) / s^2``. The conditioning is the pipeline's: the CLIP
embedding of the conditioning frame, and its unscaled VAE latent (after noise augmentation) repeated
over the frames and concatenated to the UNet input's channels; ``added_time_ids = [fps - 1,
motion_bucket_id, noise_aug_strength]``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .lora import (ADAPTERS, adapter_parameters, adapter_state, image_only_mode, inject_lora_adapters,
                   load_adapter_state, remove_lora_adapters, set_lora_strengths)
from .memory import KEEP_OUTPUTS_FROM_FLOPS, checkpointed_blocks, explain_out_of_memory, offloaded
from .types import SVDModels


@dataclass
class TrainConfig:
    """Settings of one ReCapture fine-tuning run (defaults from the paper where it gives them)."""

    rank: int = 16
    alpha: float | None = None  # None: equal to the rank (scale 1)
    learning_rate: float = 5e-4
    steps: int = 400
    seed: int = 0
    conditioning_frame: int = 0  # index of the anchor / source frame used as the image prompt
    fps: int = 7
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    p_mean: float = 0.7  # log-normal sigma sampling of SVD's fine-tuning
    p_std: float = 1.6
    conditioning_dropout: float = 0.1  # keeps classifier-free guidance working
    mask_erosion: int = 0  # extra latent pixels removed around holes
    spatial_frames: int = 4  # source frames per spatial step
    gradient_checkpointing: bool = True
    offload_encoders: bool = True  # CLIP and the VAE wait on the CPU once the clip is encoded
    low_memory: bool = False  # also checkpoint the feed-forwards and encode 2 frames at a time (bench/memory.py)
    # outputs costing this many FLOPs per element or more to recompute are kept through checkpointing
    # (None: everything recomputed; ignored in low_memory, which keeps nothing); see recapture.memory
    keep_outputs_from_flops: int | None = KEEP_OUTPUTS_FROM_FLOPS


@dataclass
class TrainedLoRA:
    """The result: each adapter's LoRA weights (ComfyUI keys, on the CPU) and how they were made."""

    temporal: dict[str, torch.Tensor]
    spatial: dict[str, torch.Tensor]
    rank: int
    alpha: float
    config: dict = field(default_factory=dict)
    losses: list[tuple[float, float]] = field(default_factory=list)  # (temporal, spatial) per step


# --- Encoding (once per video) ------------------------------------------------------------------------
def _to_model_range(frames: torch.Tensor, device, dtype) -> torch.Tensor:
    """``(N, H, W, 3)`` in 0..1 -> ``(N, 3, H, W)`` in -1..1."""
    return (frames.permute(0, 3, 1, 2).to(device, dtype) * 2.0 - 1.0)


VAE_CHUNK = 8  # frames the VAE encodes or decodes at once by default


@torch.no_grad()
def encode_latents(models: SVDModels, frames: torch.Tensor, chunk: int = VAE_CHUNK) -> torch.Tensor:
    """VAE latents ``(N, 4, H/8, W/8)`` scaled by the VAE's scaling factor (the diffusion space)."""
    vae = models.vae
    x = _to_model_range(frames, vae.device, vae.dtype)
    latents = torch.cat([vae.encode(x[i : i + chunk]).latent_dist.mode() for i in range(0, len(x), chunk)])
    return latents.float() * vae.config.scaling_factor


@torch.no_grad()
def encode_conditioning(models: SVDModels, frame: torch.Tensor, noise_aug_strength: float,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The image prompt: CLIP image embedding ``(1, 1, D)`` and unscaled noise-augmented latent ``(1, 4, h, w)``.

    Args:
        frame: ``(H, W, 3)`` in 0..1.
    """
    encoder, vae = models.image_encoder, models.vae
    x = _to_model_range(frame[None], vae.device, torch.float32)
    size = models.feature_extractor.crop_size
    clip_in = F.interpolate(x, size=(size["height"], size["width"]), mode="bicubic", align_corners=False,
                            antialias=True)
    mean = torch.tensor(models.feature_extractor.image_mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(models.feature_extractor.image_std, device=x.device).view(1, 3, 1, 1)
    clip_in = ((clip_in + 1.0) / 2.0 - mean) / std
    embedding = encoder(clip_in.to(encoder.device, encoder.dtype)).image_embeds[:, None]
    noise = torch.randn(x.shape, generator=generator, device=generator.device if generator else x.device)
    latent = vae.encode((x + noise_aug_strength * noise.to(x.device)).to(vae.dtype)).latent_dist.mode()
    return embedding.float(), latent.float()


def latent_mask(mask: torch.Tensor, erosion: int = 0) -> torch.Tensor:
    """Pixel validity ``(N, H, W)`` -> latent validity ``(N, 1, H/8, W/8)``.

    A latent counts only if every pixel of its 8x8 cell is valid (min-pool): the VAE would otherwise
    mix hole colour into it. ``erosion`` removes that many more latent pixels around holes.
    """
    valid = -F.max_pool2d(-mask.float()[:, None], kernel_size=8)
    for _ in range(erosion):
        valid = -F.max_pool2d(-valid, kernel_size=3, stride=1, padding=1)
    return (valid > 0.5).float()


# --- The loss ---------------------------------------------------------------------------------------
def edm_denoise(unet, noisy: torch.Tensor, sigma: torch.Tensor, conditioning_latents: torch.Tensor,
                embedding: torch.Tensor, time_ids: torch.Tensor) -> torch.Tensor:
    """``D(x; sigma)`` for clips ``(B, F, 4, h, w)`` with one sigma per clip ``(B,)``."""
    s = sigma.view(-1, 1, 1, 1, 1)
    c_in, c_skip, c_out = 1 / torch.sqrt(s**2 + 1), 1 / (s**2 + 1), -s / torch.sqrt(s**2 + 1)
    dtype = unet.dtype
    model_input = torch.cat([c_in * noisy, conditioning_latents], dim=2).to(dtype)
    v = unet(model_input, (0.25 * torch.log(sigma)).to(dtype), encoder_hidden_states=embedding.to(dtype),
             added_time_ids=time_ids.to(dtype), return_dict=False)[0].float()
    return c_skip * noisy + c_out * v


def edm_loss(unet, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, conditioning_latents: torch.Tensor,
             embedding: torch.Tensor, time_ids: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted denoising error, averaged over the valid latent elements only.

    Args:
        x0: clean latents ``(B, F, 4, h, w)``; ``valid``: ``(B, F, 1, h, w)`` 1 = counts, or None.
    """
    denoised = edm_denoise(unet, x0 + sigma.view(-1, 1, 1, 1, 1) * noise, sigma, conditioning_latents, embedding,
                           time_ids)
    weight = ((sigma**2 + 1) / sigma**2).view(-1, 1, 1, 1, 1)
    error = weight * (denoised - x0) ** 2
    if valid is None:
        return error.mean()
    valid = valid.expand_as(error)
    return (error * valid).sum() / valid.sum().clamp_min(1.0)


# --- Training ---------------------------------------------------------------------------------------
def _check_inputs(anchor, mask, source, config: TrainConfig) -> None:
    if anchor.shape[:3] != mask.shape:
        raise ValueError(f"the anchor is {tuple(anchor.shape)} but its mask is {tuple(mask.shape)}: use the mask "
                         "that ReCapture Render Anchor made with this anchor")
    if anchor.shape[1:] != source.shape[1:]:
        raise ValueError(f"anchor frames are {anchor.shape[2]}x{anchor.shape[1]} but source frames are "
                         f"{source.shape[2]}x{source.shape[1]}: load both at the same size")
    if anchor.shape[1] % 8 or anchor.shape[2] % 8:
        raise ValueError(f"frame sizes must be multiples of 8 (64 for real SVD), got {anchor.shape[2]}x{anchor.shape[1]}")
    for name, x in (("anchor", anchor), ("mask", mask), ("source", source)):
        if not torch.isfinite(x).all():
            raise ValueError(f"the {name} contains NaN or infinite values")
    if latent_mask(mask, config.mask_erosion).sum() == 0:
        raise ValueError("the anchor mask leaves no valid latent: nothing to train the temporal LoRA on (is the "
                         "mask inverted, or the camera move so large that nothing of the source is seen?)")
    if config.steps < 1:
        raise ValueError(f"steps must be at least 1, got {config.steps}")
    if not 0 < config.learning_rate <= 0.1:
        raise ValueError(f"learning rate {config.learning_rate} is outside (0, 0.1]: the paper uses 5e-4")
    if not 0 <= config.conditioning_frame < min(len(anchor), len(source)):
        raise ValueError(f"conditioning_frame {config.conditioning_frame} is not a frame of the clip")


def _sigmas(count: int, config: TrainConfig, generator: torch.Generator, device) -> torch.Tensor:
    log_sigma = config.p_mean + config.p_std * torch.randn(count, generator=generator, device=generator.device)
    return log_sigma.exp().to(device)


def _drop_conditioning(embedding, latents, probability: float, generator: torch.Generator):
    """Zeroes the image prompt with the given probability (the unconditional branch of CFG)."""
    keep = (torch.rand(embedding.shape[0], generator=generator, device=generator.device) >= probability).float()
    keep = keep.to(embedding.device)
    return embedding * keep.view(-1, 1, 1), latents * keep.view(-1, 1, 1, 1, 1)


def train_recapture_lora(models: SVDModels, anchor: torch.Tensor, mask: torch.Tensor, source: torch.Tensor,
                         config: TrainConfig | None = None,
                         on_step: Callable[[int, float, float], None] | None = None) -> TrainedLoRA:
    """Fine-tunes the two LoRAs (see ``_train``); running out of device memory raises ``OutOfMemory``
    with ways out, after the model has been cleaned up."""
    frames, height, width = anchor.shape[:3]
    with explain_out_of_memory("training on", frames, height, width,
                               "low_memory on (--low-memory on the command line)"):
        return _train(models, anchor, mask, source, config or TrainConfig(), on_step)


def _train(models: SVDModels, anchor: torch.Tensor, mask: torch.Tensor, source: torch.Tensor,
           config: TrainConfig, on_step: Callable[[int, float, float], None] | None) -> TrainedLoRA:
    """Fine-tunes the temporal LoRA on the anchor (masked) and the spatial LoRA on the source frames.

    Args:
        anchor: ``(F, H, W, 3)`` anchor video in 0..1.
        mask: ``(F, H, W)`` its validity mask (1 = valid).
        source: ``(N, H, W, 3)`` source frames in 0..1.
        on_step: called after every step with (step, temporal loss, spatial loss); an exception raised
            there (Cancel) stops training.

    Returns:
        The two adapters' weights. The UNet is left as it was: adapters are removed again, also when
        training fails or is cancelled, so a shared model is never left half-trained.
    """
    _check_inputs(anchor, mask, source, config)
    unet = models.unet
    device = unet.device
    generator = torch.Generator("cpu").manual_seed(config.seed)

    # 1. Encode everything once; the VAE and CLIP are not needed after this. Holes are made black
    #    first: whatever the anchor holds there must not reach valid latents through the VAE.
    anchor = anchor * mask[..., None]
    chunk = 2 if config.low_memory else VAE_CHUNK
    anchor_latents = encode_latents(models, anchor, chunk)[None]  # (1, F, 4, h, w)
    source_latents = encode_latents(models, source, chunk)[:, None]  # (N, 1, 4, h, w): frames as separate images
    valid = latent_mask(mask, config.mask_erosion)[None].to(device)  # (1, F, 1, h, w)
    anchor_embedding, anchor_condition = encode_conditioning(models, anchor[config.conditioning_frame],
                                                             config.noise_aug_strength, generator)
    source_embedding, source_condition = encode_conditioning(models, source[config.conditioning_frame],
                                                             config.noise_aug_strength, generator)
    time_ids = torch.tensor([[config.fps - 1, config.motion_bucket_id, config.noise_aug_strength]], device=device)

    # 2. Two adapters on the frozen base, one optimizer over both.
    #    Checkpointing keeps only each block's inputs (the backward passes run inside, as it requires).
    encoders = (models.vae, models.image_encoder) if config.offload_encoders else ()
    checkpointing = (checkpointed_blocks(unet, feed_forwards=config.low_memory,
                                         keep_from_flops=None if config.low_memory else config.keep_outputs_from_flops)
                     if config.gradient_checkpointing or config.low_memory else contextlib.nullcontext())
    with offloaded(*encoders), checkpointing:
        inject_lora_adapters(unet, config.rank, config.alpha, config.seed)
        temporal_params, spatial_params = (adapter_parameters(unet, a) for a in ADAPTERS)
        optimizer = torch.optim.AdamW([*temporal_params, *spatial_params], lr=config.learning_rate, weight_decay=0.0)
        losses: list[tuple[float, float]] = []
        try:
            for step in range(config.steps):
                # 3a. Temporal LoRA on the anchor clip, loss only where the anchor is valid; the spatial
                #     LoRA is active but frozen.
                _trainable(temporal_params, spatial_params)
                x0 = anchor_latents.to(device)
                embedding, condition = _drop_conditioning(anchor_embedding, anchor_condition[:, None].expand_as(x0),
                                                          config.conditioning_dropout, generator)
                noise = torch.randn(x0.shape, generator=generator).to(device)
                temporal_loss = edm_loss(unet, x0, _sigmas(1, config, generator, device), noise, condition, embedding,
                                         time_ids, valid)
                temporal_loss.backward()

                # 3b. Spatial LoRA on source frames as separate images: temporal layers and LoRA off.
                _trainable(spatial_params, temporal_params)
                picks = torch.randperm(len(source_latents), generator=generator)[: config.spatial_frames]
                x0 = source_latents[picks].to(device)
                embedding, condition = _drop_conditioning(source_embedding.expand(len(picks), -1, -1),
                                                          source_condition[:, None].expand_as(x0),
                                                          config.conditioning_dropout, generator)
                noise = torch.randn(x0.shape, generator=generator).to(device)
                set_lora_strengths(unet, temporal=0.0, spatial=1.0)
                with image_only_mode(unet):
                    spatial_loss = edm_loss(unet, x0, _sigmas(len(picks), config, generator, device), noise, condition,
                                            embedding, time_ids.expand(len(picks), -1))
                    spatial_loss.backward()
                set_lora_strengths(unet, temporal=1.0, spatial=1.0)

                # 4. One update of both adapters (total loss = temporal + spatial).
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append((temporal_loss.item(), spatial_loss.item()))
                if on_step is not None:
                    on_step(step, *losses[-1])
            alpha = float(config.alpha or config.rank)
            return TrainedLoRA(temporal=adapter_state(unet, "temporal", alpha), spatial=adapter_state(unet, "spatial", alpha),
                               rank=config.rank, alpha=alpha, config=asdict(config), losses=losses)
        finally:
            del optimizer
            remove_lora_adapters(unet)


def _trainable(train: list[torch.nn.Parameter], freeze: list[torch.nn.Parameter]) -> None:
    for p in train:
        p.requires_grad_(True)
    for p in freeze:
        p.requires_grad_(False)


def apply_lora(unet, lora: TrainedLoRA, temporal: float = 1.0, spatial: float = 1.0) -> None:
    """Injects trained adapters into a UNet with the given strengths (for sampling)."""
    inject_lora_adapters(unet, lora.rank, lora.alpha)
    try:
        load_adapter_state(unet, "temporal", lora.temporal)
        load_adapter_state(unet, "spatial", lora.spatial)
    except ValueError:
        remove_lora_adapters(unet)
        raise
    set_lora_strengths(unet, temporal, spatial)


def loss_curve_image(losses: list[tuple[float, float]], width: int = 512, height: int = 256) -> torch.Tensor:
    """A small plot of the temporal (orange) and spatial (blue) loss over steps: ``(H, W, 3)`` in 0..1.

    Each step draws its own noise level, so single losses jump by orders of magnitude: they are drawn
    faint, with a running mean over a tenth of the steps on top (the trend to watch).
    """
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (24, 24, 28))
    draw = ImageDraw.Draw(image)
    if losses:
        logs = np.log10(np.maximum(np.asarray(losses, dtype=np.float64), 1e-8))  # (steps, 2)
        window = max(1, len(logs) // 10)
        kernel = np.ones(window) / window
        trend = np.stack([np.convolve(np.pad(logs[:, i], (window - 1, 0), mode="edge"), kernel, mode="valid")
                          for i in range(2)], axis=1)
        lo, hi = float(logs.min()), float(logs.max())
        span = max(hi - lo, 1e-6)

        def line(values, color, thickness):
            points = [(8 + (width - 16) * i / max(1, len(values) - 1), height - 20 - (height - 40) * (v - lo) / span)
                      for i, v in enumerate(values)]
            draw.line(points if len(points) > 1 else points * 2, fill=color, width=thickness)

        for index, color, faint in ((0, (255, 150, 60), (90, 62, 40)), (1, (90, 160, 255), (45, 65, 95))):
            line(logs[:, index], faint, 1)
        for index, color in ((0, (255, 150, 60)), (1, (90, 160, 255))):
            line(trend[:, index], color, 2)
        draw.text((8, 4), f"temporal {10 ** trend[-1, 0]:.4f}  spatial {10 ** trend[-1, 1]:.4f}  (mean of the last "
                          f"{window}, log scale, {len(losses)} steps)", fill=(230, 230, 230))
    return torch.from_numpy(np.array(image, dtype=np.float32) / 255.0)


def lora_from_files(temporal: dict[str, torch.Tensor], spatial: dict[str, torch.Tensor],
                    settings: dict | None = None) -> TrainedLoRA:
    """A ``TrainedLoRA`` from two loaded adapter files (rank from the weights, alpha from ``.alpha``)."""
    rank_alpha = set()
    for state in (temporal, spatial):
        a_key = next((k for k in state if k.endswith(".lora_A.weight")), None)
        if a_key is None:
            raise ValueError("a LoRA file without lora_A weights")
        alpha = state.get(a_key.replace(".lora_A.weight", ".alpha"))
        rank = state[a_key].shape[0]
        rank_alpha.add((rank, float(alpha) if alpha is not None else float(rank)))
    if len(rank_alpha) != 1:
        raise ValueError(f"the temporal and spatial LoRA differ in rank/alpha {sorted(rank_alpha)}: load a pair "
                         "saved by the same training")
    rank, alpha = rank_alpha.pop()
    return TrainedLoRA(temporal=temporal, spatial=spatial, rank=rank, alpha=alpha, config=settings or {})
