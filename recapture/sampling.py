"""Stage 2b: sample SVD with both LoRAs from the first anchor frame, then refine with SDEdit.

The denoiser and the image prompt are the training's own (``recapture.svd_conditioning``), so what was
learned is exactly what is sampled. The LoRAs are merged into the weights while sampling (``merged_lora``). The sampler is SVD's:
Euler steps over the scheduler's Karras sigmas, classifier-free guidance rising linearly over the
frames from ``min_guidance`` to ``max_guidance`` (the unconditional branch has a zero image prompt).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch
from einops import repeat

from .checkpointing import feed_forwards_in_slices
from .config import SampleConfig, check_setting, check_settings, memory_plan
from .lora import merged_lora
from .memory import offloaded, out_of_memory_as
from .svd_conditioning import decode_latents, edm_denoise, encode_conditioning, encode_latents, image_prompt
from .types import SVDModels, TrainedLoRA
from .windows import fuse, window_starts

OnWindow = Callable[[int, int], None]  # (step, window) after each window's denoiser call


def karras_sigmas(models: SVDModels, steps: int) -> torch.Tensor:
    """The scheduler's sigmas for ``steps`` steps, ending with 0: ``(steps + 1,)``."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    models.scheduler.set_timesteps(steps, device="cpu")
    return models.scheduler.sigmas.float().clone()


@torch.no_grad()
def denoise(models: SVDModels, latents: torch.Tensor, sigmas: torch.Tensor, embeddings: torch.Tensor,
            conditions: torch.Tensor, config: SampleConfig, on_step: OnWindow | None = None) -> torch.Tensor:
    """Euler steps from ``sigmas[0]`` to ``sigmas[-1]`` on ``(1, F, 4, h, w)`` latents with per-frame CFG,
    a window of frames at a time (``recapture.windows``), the windows fused at every step.

    Args:
        embeddings, conditions: each window's image prompt, ``(K, 1, D)`` and ``(K, 4, h, w)``
            (``encode_conditioning`` per window of ``window_starts``).
        on_step: called with ``(step, window)`` after each window's denoiser call (``window_count`` per
            step), so progress and Cancel never wait for a whole step of a long clip.
    """
    plan = memory_plan(config.memory)
    unet = models.unet
    device = unet.device
    frames = latents.shape[1]
    starts = window_starts(frames, models.num_frames, config.window_overlap)
    window = min(frames, models.num_frames)
    time_ids = torch.tensor([config.time_ids()] * 2, device=device)
    guidance = torch.linspace(config.min_guidance, config.max_guidance, window, device=device).view(1, -1, 1, 1, 1)
    x = latents.to(device)
    slices = plan.feed_forward_tokens
    with feed_forwards_in_slices(unet, slices) if slices else contextlib.nullcontext():
        for i in range(len(sigmas) - 1):
            sigma, following = sigmas[i].to(device), sigmas[i + 1].to(device)
            parts = []
            for k, start in enumerate(starts):
                parts.append(_guided(unet, x[:, start : start + window], sigma, embeddings[k : k + 1].to(device),
                                     conditions[k : k + 1].to(device), time_ids, guidance, plan.guidance_in_turn))
                if on_step is not None:
                    on_step(i, k)
            denoised = fuse(parts, starts, frames, config.window_overlap)
            x = x + (x - denoised) / sigma * (following - sigma)
    return x


def window_count(models: SVDModels, num_frames: int, config: SampleConfig) -> int:
    """How many windows each denoising step of a ``num_frames`` clip runs (``window_starts``)."""
    return len(window_starts(num_frames, models.num_frames, config.window_overlap))


def _guided(unet, x: torch.Tensor, sigma: torch.Tensor, embedding: torch.Tensor, condition: torch.Tensor,
            time_ids: torch.Tensor, guidance: torch.Tensor, in_turn: bool) -> torch.Tensor:
    """One window's classifier-free-guided denoiser; the unconditional branch has a zero image prompt."""
    both_embeddings = torch.cat([torch.zeros_like(embedding), embedding])
    condition = repeat(condition, "1 c h w -> 1 f c h w", f=x.shape[1])
    both_conditions = torch.cat([torch.zeros_like(condition), condition])
    if in_turn:  # half the activations, the same result
        unconditional, conditional = (edm_denoise(unet, x, sigma[None], both_conditions[b : b + 1],
                                                  both_embeddings[b : b + 1], time_ids[b : b + 1]) for b in (0, 1))
    else:
        unconditional, conditional = edm_denoise(unet, torch.cat([x, x]), sigma.repeat(2), both_conditions,
                                                 both_embeddings, time_ids).chunk(2)
    return unconditional + guidance * (conditional - unconditional)


def window_prompts(models: SVDModels, frames: torch.Tensor, num_frames: int, config: SampleConfig,
                   generator: torch.Generator, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each window's image prompt encoded (``encode_conditioning``): ``frames`` ``(H, W, 3)`` is every
    window's prompt; ``(N, H, W, 3)`` gives each window the frame it starts at, black where ``mask``
    ``(N, H, W)`` says invalid (``image_prompt``, as training)."""
    starts = window_starts(num_frames, models.num_frames, config.window_overlap)
    prompts = [frames] * len(starts) if frames.ndim == 3 else [image_prompt(frames, mask, start) for start in starts]
    encoded = [encode_conditioning(models, prompt, config.noise_aug_strength, generator) for prompt in prompts]
    return torch.cat([e for e, _ in encoded]), torch.cat([c for _, c in encoded])


def _denoise_then_decode(models: SVDModels, latents, sigmas, embedding, condition, config: SampleConfig,
                         on_step) -> torch.Tensor:
    """``denoise`` then ``decode_latents``, each with only the models its memory plan keeps on the device:
    CLIP is done once the prompt is encoded, the VAE can wait while the UNet works, and the UNet while
    the VAE decodes."""
    plan = memory_plan(config.memory)
    with offloaded(*((models.image_encoder,) if plan.offload_encoders else ())):
        with offloaded(*((models.vae,) if plan.offload_encoders else ())):
            latents = denoise(models, latents, sigmas, embedding, condition, config, on_step)
        with offloaded(*((models.unet,) if plan.park_unet else ())):
            return decode_latents(models, latents, config.decode_chunk_size)


def with_lora(models: SVDModels, lora: TrainedLoRA | None, temporal: float, spatial: float, work):
    """Runs ``work()`` with the LoRAs merged into the UNet's weights at these strengths, and always
    takes them out again."""
    if lora is None:
        return work()
    with merged_lora(models.unet, {"temporal": lora.temporal, "spatial": lora.spatial},
                     {"temporal": temporal, "spatial": spatial}):
        return work()


def sample_video(models: SVDModels, lora: TrainedLoRA | None, prompt: torch.Tensor, num_frames: int,
                 config: SampleConfig | None = None, on_step: OnWindow | None = None,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Samples ``num_frames`` frames at the prompt's size with both LoRAs active, a window of SVD's
    length at a time when the clip is longer (``recapture.windows``); ``on_step`` as ``denoise``.

    Args:
        prompt: the image prompt in 0..1: ``(H, W, 3)`` for every window, or ``(num_frames, H, W, 3)``
            (ReCapture: the anchor): each window is prompted with its first frame.
        mask: ``(num_frames, H, W)`` validity of ``prompt``'s frames: the prompts are black where it is 0,
            as in training (``image_prompt``); None: all valid.

    Returns:
        ``(num_frames, H, W, 3)`` frames in 0..1.
    """
    config = config or SampleConfig()
    check_settings(config)  # NaN guidance or LoRA strengths would give a black video
    if not torch.isfinite(prompt).all():
        raise ValueError("the image prompt frame has NaN or infinite values: use a frame with colours in 0..1")
    if prompt.ndim == 4 and len(prompt) != num_frames:
        raise ValueError(f"{len(prompt)} prompt frames for {num_frames} frames: give one frame, or one per frame")
    h, w = prompt.shape[-3:-1]
    if h % 8 or w % 8:
        raise ValueError(f"the frame size must be a multiple of 8 (64 for real SVD), got {w}x{h}")
    generator = torch.Generator("cpu").manual_seed(config.seed)
    embedding, condition = window_prompts(models, prompt, num_frames, config, generator, mask)
    sigmas = karras_sigmas(models, config.steps)
    channels = models.unet.config.out_channels
    noise = torch.randn(1, num_frames, channels, h // 8, w // 8, generator=generator)

    def work():
        return _denoise_then_decode(models, noise * sigmas[0], sigmas, embedding, condition, config, on_step)

    with out_of_memory_as("sampling", num_frames, h, w, models.num_frames):
        return with_lora(models, lora, config.temporal_strength, config.spatial_strength, work)


def sdedit_sigma(strength: float) -> float:
    """The noise level SDEdit starts from: ``sigma = sqrt(s / (1 - s))``, so that strength ``s`` is the
    noise's share of the noised latents' variance, ``sigma^2 / (1 + sigma^2)`` (DDPM's ``1 - alpha_bar``),
    whatever the step count. 0 -> 0 (nothing changes), 1 -> infinity (pure noise).

    >>> [round(sdedit_sigma(s), 3) for s in (0.0, 0.2, 0.5, 0.6, 0.9)]
    [0.0, 0.5, 1.0, 1.225, 3.0]
    """
    return math.inf if strength >= 1 else math.sqrt(strength / (1 - strength))


def refine_sigmas(models: SVDModels, config: SampleConfig) -> torch.Tensor:
    """SDEdit's sigmas: ``sdedit_sigma(config.refine_strength)``, then the sigmas of the ``config.steps``-step
    Karras schedule below it, ending with 0. Strength 0 gives ``[0]`` (no step); a start above the
    schedule's largest sigma starts there (from noise)."""
    check_setting(SampleConfig, "refine_strength", config.refine_strength, "strength")
    schedule = karras_sigmas(models, config.steps)
    start = min(sdedit_sigma(config.refine_strength), float(schedule[0]))
    return torch.cat([torch.tensor([start]), schedule[schedule < start]])


def refine_steps(models: SVDModels, config: SampleConfig) -> int:
    """How many Euler steps SDEdit runs (``refine_sigmas``)."""
    return len(refine_sigmas(models, config)) - 1


def sdedit(models: SVDModels, lora: TrainedLoRA | None, frames: torch.Tensor, config: SampleConfig | None = None,
           on_step: OnWindow | None = None) -> torch.Tensor:
    """SDEdit refinement with the spatial LoRA only: noise the frames to the level of
    ``config.refine_strength`` (``sdedit_sigma``) and denoise over ``refine_sigmas``.

    Strength 0 returns the frames after a VAE round trip; 1 starts from pure noise. Each window's image
    prompt is its first frame; ``on_step`` as ``denoise``.
    """
    config = config or SampleConfig()
    if not torch.isfinite(frames).all():
        raise ValueError("the frames to refine have NaN or infinite values: refine frames with colours in 0..1")
    check_settings(config)
    sigmas = refine_sigmas(models, config)
    generator = torch.Generator("cpu").manual_seed(config.seed)
    with offloaded(models.unet) if memory_plan(config.memory).park_unet else contextlib.nullcontext():
        x0 = encode_latents(models, frames, config.decode_chunk_size).cpu()[None]  # with the noise, on the host
    embedding, condition = window_prompts(models, frames, len(frames), config, generator)
    noise = torch.randn(x0.shape, generator=generator)

    def work():
        if len(sigmas) == 1:
            return decode_latents(models, x0, config.decode_chunk_size)
        return _denoise_then_decode(models, x0 + sigmas[0] * noise, sigmas, embedding, condition, config, on_step)

    with out_of_memory_as("refining", len(frames), frames.shape[1], frames.shape[2], models.num_frames):
        return with_lora(models, lora, 0.0, config.spatial_strength, work)
