"""Stage 2b: sample SVD with both LoRAs from the first anchor frame, then refine with SDEdit.

The denoiser and the image prompt are the training's own (``train.edm_denoise``,
``train.encode_conditioning``), so what was learned is exactly what is sampled. The sampler is SVD's:
Euler steps over the scheduler's Karras sigmas, classifier-free guidance rising linearly over the
frames from ``min_guidance`` to ``max_guidance`` (the unconditional branch has a zero image prompt).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from .lora import merged_lora, remove_lora_adapters
from .memory import explain_out_of_memory, feed_forwards_in_slices, offloaded
from .train import VAE_CHUNK, TrainedLoRA, apply_lora, edm_denoise, encode_conditioning, encode_latents
from .types import SVDModels


@dataclass
class SampleConfig:
    steps: int = 25
    min_guidance: float = 1.0
    max_guidance: float = 3.0
    fps: int = 7
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    seed: int = 0
    temporal_strength: float = 1.0
    spatial_strength: float = 1.0
    decode_chunk_size: int = VAE_CHUNK  # frames the VAE decodes (SDEdit: also encodes) at once
    merge_lora: bool = True  # fold the LoRAs into the weights while sampling (see lora.merged_lora)
    offload_encoders: bool = True  # CLIP waits on the CPU once the prompt is encoded, the VAE while the UNet works
    low_memory: bool = False  # CFG branches in turn, feed-forwards in slices, the UNet off while the VAE works


LOW_MEMORY_ADVICE = ("low_memory on with decode_chunk_size 2, about half the memory (--low-memory --decode-chunk-size 2 "
                     "on the command line)")


def karras_sigmas(models: SVDModels, steps: int) -> torch.Tensor:
    """The scheduler's sigmas for ``steps`` steps, ending with 0: ``(steps + 1,)``."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    models.scheduler.set_timesteps(steps, device="cpu")
    return models.scheduler.sigmas.float().clone()


@torch.no_grad()
def denoise(models: SVDModels, latents: torch.Tensor, sigmas: torch.Tensor, embedding: torch.Tensor,
            condition: torch.Tensor, config: SampleConfig, on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Euler steps from ``sigmas[0]`` to ``sigmas[-1]`` on ``(1, F, 4, h, w)`` latents with per-frame CFG."""
    unet = models.unet
    device = unet.device
    frames = latents.shape[1]
    time_ids = torch.tensor([[config.fps - 1, config.motion_bucket_id, config.noise_aug_strength]] * 2, device=device)
    guidance = torch.linspace(config.min_guidance, config.max_guidance, frames, device=device).view(1, -1, 1, 1, 1)
    both_embeddings = torch.cat([torch.zeros_like(embedding), embedding]).to(device)
    condition = condition[:, None].expand(1, frames, *condition.shape[1:]).to(device)
    both_conditions = torch.cat([torch.zeros_like(condition), condition])
    x = latents.to(device)
    with feed_forwards_in_slices(unet) if config.low_memory else contextlib.nullcontext():
        for i in range(len(sigmas) - 1):
            sigma, following = sigmas[i].to(device), sigmas[i + 1].to(device)
            if config.low_memory:  # one branch after the other: half the activations, same result
                unconditional, conditional = (edm_denoise(unet, x, sigma[None], both_conditions[b : b + 1],
                                                          both_embeddings[b : b + 1], time_ids[b : b + 1])
                                              for b in (0, 1))
            else:
                unconditional, conditional = edm_denoise(unet, torch.cat([x, x]), sigma.repeat(2), both_conditions,
                                                         both_embeddings, time_ids).chunk(2)
            denoised = unconditional + guidance * (conditional - unconditional)
            x = x + (x - denoised) / sigma * (following - sigma)
            if on_step is not None:
                on_step(i)
    return x


@torch.no_grad()
def decode_latents(models: SVDModels, latents: torch.Tensor, chunk: int = VAE_CHUNK) -> torch.Tensor:
    """``(1, F, 4, h, w)`` latents -> ``(F, H, W, 3)`` frames in 0..1, decoding ``chunk`` frames at a time."""
    vae = models.vae
    x = latents[0] / vae.config.scaling_factor
    frames = [vae.decode(x[i : i + chunk].to(vae.device, vae.dtype), num_frames=len(x[i : i + chunk])).sample
              for i in range(0, len(x), chunk)]
    return ((torch.cat(frames).float() + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1).cpu()


def _denoise_then_decode(models: SVDModels, latents, sigmas, embedding, condition, config: SampleConfig,
                         on_step) -> torch.Tensor:
    """``denoise`` then ``decode_latents``, each with only the models it needs on the device (as configured):
    CLIP is done once the prompt is encoded, the VAE waits while the UNet works, and in low_memory the
    UNet waits while the VAE decodes."""
    encoders = config.offload_encoders
    with offloaded(*((models.image_encoder,) if encoders else ())):
        with offloaded(*((models.vae,) if encoders else ())):
            latents = denoise(models, latents, sigmas, embedding, condition, config, on_step)
        with offloaded(*((models.unet,) if config.low_memory else ())):
            return decode_latents(models, latents, config.decode_chunk_size)


def _with_lora(models: SVDModels, lora: TrainedLoRA | None, temporal: float, spatial: float, merge: bool, work):
    """Runs ``work()`` with the LoRAs applied (merged into the weights, or as adapter layers), and always
    takes them out again."""
    if lora is None:
        return work()
    if merge:
        with merged_lora(models.unet, {"temporal": lora.temporal, "spatial": lora.spatial},
                         {"temporal": temporal, "spatial": spatial}):
            return work()
    apply_lora(models.unet, lora, temporal, spatial)
    try:
        return work()
    finally:
        remove_lora_adapters(models.unet)


def sample_video(models: SVDModels, lora: TrainedLoRA | None, prompt_frame: torch.Tensor, num_frames: int,
                 config: SampleConfig | None = None, on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Samples ``num_frames`` frames at the prompt frame's size with both LoRAs active.

    Args:
        prompt_frame: ``(H, W, 3)`` in 0..1, the image prompt (ReCapture: the first anchor frame).

    Returns:
        ``(num_frames, H, W, 3)`` frames in 0..1.
    """
    config = config or SampleConfig()
    if not torch.isfinite(prompt_frame).all():
        raise ValueError("the image prompt frame has NaN or infinite values: use a frame with colours in 0..1")
    h, w = prompt_frame.shape[:2]
    if h % 8 or w % 8:
        raise ValueError(f"the frame size must be a multiple of 8 (64 for real SVD), got {w}x{h}")
    generator = torch.Generator("cpu").manual_seed(config.seed)
    embedding, condition = encode_conditioning(models, prompt_frame, config.noise_aug_strength, generator)
    sigmas = karras_sigmas(models, config.steps)
    channels = models.unet.config.out_channels
    noise = torch.randn(1, num_frames, channels, h // 8, w // 8, generator=generator)

    def work():
        return _denoise_then_decode(models, noise * sigmas[0], sigmas, embedding, condition, config, on_step)

    with explain_out_of_memory("sampling", num_frames, h, w, LOW_MEMORY_ADVICE):
        return _with_lora(models, lora, config.temporal_strength, config.spatial_strength, config.merge_lora, work)


def sdedit(models: SVDModels, lora: TrainedLoRA | None, frames: torch.Tensor, strength: float,
           config: SampleConfig | None = None, on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """SDEdit refinement with the spatial LoRA only: noise the frames to the sigma of ``strength`` and denoise.

    ``strength`` 0 returns the frames after a VAE round trip; 1 starts from pure noise. Of ``steps``
    Karras steps the last ``round(steps * strength)`` are run. The image prompt is the first frame.
    """
    config = config or SampleConfig()
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be between 0 and 1, got {strength}")
    if not torch.isfinite(frames).all():
        raise ValueError("the frames to refine have NaN or infinite values: refine frames with colours in 0..1")
    generator = torch.Generator("cpu").manual_seed(config.seed)
    with offloaded(models.unet) if config.low_memory else contextlib.nullcontext():
        x0 = encode_latents(models, frames, config.decode_chunk_size)[None]
    run = round(config.steps * strength)
    sigmas = karras_sigmas(models, config.steps)[-(run + 1):]
    embedding, condition = encode_conditioning(models, frames[0], config.noise_aug_strength, generator)
    noise = torch.randn(x0.shape, generator=generator)

    def work():
        if not run:
            return decode_latents(models, x0, config.decode_chunk_size)
        return _denoise_then_decode(models, x0 + sigmas[0] * noise, sigmas, embedding, condition, config, on_step)

    with explain_out_of_memory("refining", len(frames), frames.shape[1], frames.shape[2], LOW_MEMORY_ADVICE):
        return _with_lora(models, lora, 0.0, config.spatial_strength, config.merge_lora, work)
