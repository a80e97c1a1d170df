"""Stage 2a: fine-tune SVD on one video with ReCapture's masked temporal LoRA and spatial LoRA.

Each step trains the temporal LoRA on the anchor clip, with the loss only where the anchor is valid,
then the spatial LoRA on source frames seen as separate images (temporal layers off), and updates both.
The denoiser, the conditioning and the masked loss are in ``recapture.svd_conditioning``; how memory is
saved (checkpointing, offloading) is the ``MemoryPlan`` of ``TrainConfig.memory``.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from typing import Callable

import torch
from einops import rearrange

from .checkpointing import checkpointed_blocks
from .config import TrainConfig, check_settings, memory_plan
from .lora import ADAPTERS, adapter_parameters, adapter_state, image_only_mode, inject_lora_adapters, \
    remove_lora_adapters, set_lora_strengths
from .memory import offloaded, out_of_memory_as
from .svd_conditioning import edm_loss, encode_conditioning, encode_latents, image_prompt, latent_mask
from .types import SVDModels, TrainedLoRA
from .windows import window_starts


def _check_inputs(anchor, mask, source, config: TrainConfig) -> None:
    if anchor.shape[:3] != mask.shape:
        raise ValueError(f"the anchor is {tuple(anchor.shape)} but its mask is {tuple(mask.shape)}: use the mask "
                         "rendered with this anchor")
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
    check_settings(config)  # every other setting (NaN noise_aug_strength would train NaN LoRAs)


def _sigmas(count: int, config: TrainConfig, generator: torch.Generator, device) -> torch.Tensor:
    log_sigma = config.p_mean + config.p_std * torch.randn(count, generator=generator, device=generator.device)
    return log_sigma.exp().to(device)


def reframed(frames: torch.Tensor, generator: torch.Generator, min_scale: float = 0.8) -> torch.Tensor:
    """The spatial LoRA's augmentation: each frame cropped to a random window (``min_scale``..1 of each
    side, the aspect kept, anywhere in the frame), scaled back to full size, and mirrored with
    probability 1/2, so the LoRA learns the scene's look rather than the source camera's framing.

    Args:
        frames: ``(N, H, W, 3)`` in 0..1.

    Returns:
        ``(N, H, W, 3)``.
    """
    from kornia.geometry.transform import crop_and_resize

    n, h, w = frames.shape[:3]
    scale = min_scale + (1 - min_scale) * torch.rand(n, generator=generator)
    left = (1 - scale) * torch.rand(n, generator=generator) * (w - 1)
    top = (1 - scale) * torch.rand(n, generator=generator) * (h - 1)
    right, bottom = left + scale * (w - 1), top + scale * (h - 1)
    mirror = torch.rand(n, generator=generator) < 0.5
    left, right = torch.where(mirror, right, left), torch.where(mirror, left, right)  # a mirrored box flips
    boxes = torch.stack([torch.stack([left, top], -1), torch.stack([right, top], -1),
                         torch.stack([right, bottom], -1), torch.stack([left, bottom], -1)], dim=1)
    crops = crop_and_resize(rearrange(frames, "n h w c -> n c h w"), boxes, (h, w), mode="bilinear")
    return rearrange(crops, "n c h w -> n h w c").clamp(0, 1)


def spread(count: int, most: int) -> torch.Tensor:
    """Indices of at most ``most`` of ``count`` items, evenly spread from the first to the last.

    >>> spread(5, 8).tolist(), spread(9, 3).tolist()
    ([0, 1, 2, 3, 4], [0, 4, 8])
    """
    if count <= most:
        return torch.arange(count)
    return torch.linspace(0, count - 1, most).round().long()


def _drop_conditioning(embedding, latents, probability: float, generator: torch.Generator):
    """Zeroes the image prompt with the given probability (the unconditional branch of CFG)."""
    keep = (torch.rand(embedding.shape[0], generator=generator, device=generator.device) >= probability).float()
    keep = keep.to(embedding.device)
    return embedding * keep.view(-1, 1, 1), latents * keep.view(-1, 1, 1, 1, 1)


def train_recapture_lora(models: SVDModels, anchor: torch.Tensor, mask: torch.Tensor, source: torch.Tensor,
                         config: TrainConfig | None = None,
                         on_step: Callable[[int, float, float], None] | None = None) -> TrainedLoRA:
    """Fine-tunes the two LoRAs (see ``_train``); running out of device memory raises ``OutOfMemory``
    after the model has been cleaned up."""
    config = config or TrainConfig()
    _check_inputs(anchor, mask, source, config)  # before any work, the model untouched
    frames, height, width = anchor.shape[:3]
    with out_of_memory_as("training", frames, height, width, models.num_frames):
        return _train(models, anchor, mask, source, config, on_step)


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
    plan = memory_plan(config.memory)
    unet = models.unet
    device = unet.device
    generator = torch.Generator("cpu").manual_seed(config.seed)

    # 1. Encode everything once; the VAE and CLIP are not needed after this. Holes are made black
    #    first: whatever the anchor holds there must not reach valid latents through the VAE.
    #    What grows with the clip's length stays in host memory; a window of it moves at each step.
    anchor = anchor * mask[..., None]
    anchor_latents = rearrange(encode_latents(models, anchor, plan.encode_chunk).cpu(), "f c h w -> 1 f c h w")
    # the source frames as separate one-frame clips (at most spatial_pool of a long clip, spread over it);
    # augmented: several reframed copies of each (in host memory, at most spatial_pool x augmented_copies)
    pool = source[spread(len(source), config.spatial_pool)]
    copies = [reframed(pool, generator) for _ in range(config.augmented_copies)] if config.spatial_augment else [pool]
    source_latents = rearrange(encode_latents(models, torch.cat(copies), plan.encode_chunk), "n c h w -> n 1 c h w")
    valid = latent_mask(mask, config.mask_erosion)[None]  # (1, F, 1, h, w)
    # the image prompts, each with a set of noise augmentation draws to pick from at every step
    #    A clip longer than SVD's window trains on one of the sampler's windows per step, each with its
    #    own prompt (recapture.windows).
    draws = config.conditioning_noise_draws
    starts = window_starts(len(anchor), models.num_frames, config.window_overlap)
    window = min(len(anchor), models.num_frames)
    prompts = [encode_conditioning(models, image_prompt(anchor, mask, min(start + config.conditioning_frame,
                                                                          len(anchor) - 1)),
                                   config.noise_aug_strength, generator, draws, plan.encode_chunk) for start in starts]
    anchor_embeddings = torch.cat([embedding for embedding, _ in prompts])  # (windows, 1, D)
    anchor_conditions = torch.stack([conditions.cpu() for _, conditions in prompts])  # (windows, draws, 4, h, w)
    source_embedding, source_conditions = encode_conditioning(
        models, image_prompt(source, None, config.conditioning_frame), config.noise_aug_strength, generator, draws,
        plan.encode_chunk)
    time_ids = torch.tensor([config.time_ids()], device=device)

    # 2. Two adapters on the frozen base, one optimizer over both.
    #    Checkpointing keeps only each block's inputs (the backward passes run inside, as it requires).
    encoders = (models.vae, models.image_encoder) if plan.offload_encoders else ()
    checkpointing = (checkpointed_blocks(unet, plan.keep_outputs_from_flops, plan.feed_forward_tokens)
                     if plan.checkpointing else contextlib.nullcontext())
    with offloaded(*encoders), checkpointing:
        inject_lora_adapters(unet, config.rank, config.alpha, config.seed)
        temporal_params, spatial_params = (adapter_parameters(unet, a) for a in ADAPTERS)
        optimizer = torch.optim.AdamW([*temporal_params, *spatial_params], lr=config.learning_rate, weight_decay=0.0)
        scaler = _loss_scaler(unet)
        losses: list[tuple[float, float]] = []
        try:
            for step in range(config.steps):
                # 3a. Temporal LoRA on the anchor clip, loss only where the anchor is valid; the spatial
                #     LoRA is active but frozen.
                _trainable(temporal_params, spatial_params)
                k = int(_draw(1, len(starts), generator)) if len(starts) > 1 else 0
                x0 = anchor_latents[:, starts[k] : starts[k] + window].to(device)
                condition = anchor_conditions[k][_draw(1, draws, generator)][:, None].to(device).expand_as(x0)
                embedding, condition = _drop_conditioning(anchor_embeddings[k : k + 1], condition,
                                                          config.conditioning_dropout, generator)
                noise = torch.randn(x0.shape, generator=generator).to(device)
                temporal_loss = edm_loss(unet, x0, _sigmas(1, config, generator, device), noise, condition, embedding,
                                         time_ids, valid[:, starts[k] : starts[k] + window].to(device))
                scaler.scale(temporal_loss).backward()

                # 3b. Spatial LoRA on source frames as separate images: temporal layers and LoRA off.
                _trainable(spatial_params, temporal_params)
                picks = torch.randperm(len(source_latents), generator=generator)[: config.spatial_frames]
                x0 = source_latents[picks].to(device)
                condition = source_conditions[_draw(len(picks), draws, generator)][:, None].expand_as(x0)
                embedding, condition = _drop_conditioning(source_embedding.expand(len(picks), -1, -1), condition,
                                                          config.conditioning_dropout, generator)
                noise = torch.randn(x0.shape, generator=generator).to(device)
                set_lora_strengths(unet, temporal=0.0, spatial=1.0)
                with image_only_mode(unet):
                    spatial_loss = edm_loss(unet, x0, _sigmas(len(picks), config, generator, device), noise, condition,
                                            embedding, time_ids.expand(len(picks), -1))
                    scaler.scale(spatial_loss).backward()
                set_lora_strengths(unet, temporal=1.0, spatial=1.0)

                # 4. One update of both adapters (total loss = temporal + spatial).
                scaler.step(optimizer)
                scaler.update()
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


def _loss_scaler(unet) -> torch.amp.GradScaler:
    """A float16 base would flush the tiny per-element gradients of a mean over ~0.5M latents to zero: its
    losses are scaled up for the backward pass (steps that overflow are skipped and the scale halved).
    Other dtypes need no scaling (the scaler is off)."""
    from packaging.version import Version

    device, half = unet.device, unet.dtype == torch.float16
    if half and device.type == "mps" and Version(torch.__version__.split("+")[0]) < Version("2.8"):
        raise ValueError(f"training a float16 model on an Apple GPU needs torch 2.8 or later (loss scaling on MPS), "
                         f"this is {torch.__version__}: pick dtype bf16 or fp32 in ReCapture Load SVD, or update torch")
    return torch.amp.GradScaler(device.type, init_scale=2.0**16, growth_interval=50, enabled=half)


def _draw(count: int, draws: int, generator: torch.Generator) -> torch.Tensor:
    """Which of the pre-encoded noise augmentation draws each of ``count`` clips gets this step."""
    return torch.randint(draws, (count,), generator=generator)


def _trainable(train: list[torch.nn.Parameter], freeze: list[torch.nn.Parameter]) -> None:
    for p in train:
        p.requires_grad_(True)
    for p in freeze:
        p.requires_grad_(False)
