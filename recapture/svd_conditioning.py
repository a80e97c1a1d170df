"""How SVD sees a clip, shared by training and sampling: VAE latents, the image prompt, the EDM denoiser
and the masked loss.

EDM with v-prediction and sigma_data = 1, exactly as diffusers' SVD sampler (EulerDiscreteScheduler,
v_prediction, continuous timesteps) calls the UNet:

    c_in = 1 / sqrt(s^2 + 1)      c_skip = 1 / (s^2 + 1)      c_out = -s / sqrt(s^2 + 1)
    c_noise = 0.25 ln(s)          D(x; s) = c_skip x + c_out F(c_in x, c_noise)

with ``x = x0 + s n`` and loss weight ``(s^2 + 1) / s^2``. The conditioning is the pipeline's: the CLIP
embedding of the conditioning frame, and its unscaled VAE latent (after noise augmentation) repeated
over the frames and concatenated to the UNet input's channels; ``added_time_ids = [fps - 1,
motion_bucket_id, noise_aug_strength]`` (``Conditioning.time_ids``).

Clips are ``(B, F, C, h, w)``: B clips of F frames; frames are ``(N, H, W, 3)`` in 0..1 as ComfyUI's IMAGE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from .config import VAE_CHUNK
from .types import SVDModels


def to_model_range(frames: torch.Tensor, device, dtype) -> torch.Tensor:
    """``(N, H, W, 3)`` in 0..1 -> ``(N, 3, H, W)`` in -1..1."""
    return rearrange(frames, "n h w c -> n c h w").to(device, dtype) * 2.0 - 1.0


@torch.no_grad()
def encode_latents(models: SVDModels, frames: torch.Tensor, chunk: int = VAE_CHUNK) -> torch.Tensor:
    """VAE latents ``(N, 4, H/8, W/8)`` scaled by the VAE's scaling factor (the diffusion space),
    encoding ``chunk`` frames at a time."""
    vae = models.vae
    latents = torch.cat([vae.encode(to_model_range(frames[i : i + chunk], vae.device, vae.dtype)).latent_dist.mode()
                         for i in range(0, len(frames), chunk)])  # a chunk of pixels on the device at a time
    return latents.float() * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(models: SVDModels, latents: torch.Tensor, chunk: int = VAE_CHUNK) -> torch.Tensor:
    """One clip's latents ``(1, F, 4, h, w)`` -> ``(F, H, W, 3)`` frames in 0..1, decoding ``chunk``
    frames at a time (SVD's decoder mixes the frames of a chunk)."""
    vae = models.vae
    x = rearrange(latents, "1 f c h w -> f c h w") / vae.config.scaling_factor
    frames = [((vae.decode(x[i : i + chunk].to(vae.device, vae.dtype), num_frames=len(x[i : i + chunk])).sample
                .float() + 1.0) / 2.0).clamp(0, 1).cpu() for i in range(0, len(x), chunk)]  # pixels go to the host
    return rearrange(torch.cat(frames), "f c h w -> f h w c")


def clip_input(images: torch.Tensor, feature_extractor) -> torch.Tensor:
    """SVD's own CLIP preprocessing (sgm's, and diffusers' SVD pipeline for images): a Gaussian blur of
    sigma ``(factor - 1) / 2`` against aliasing, a bicubic resize with aligned corners to the CLIP size,
    then CLIP's normalisation.

    Args:
        images: ``(N, 3, H, W)`` in -1..1.
        feature_extractor: ``CLIPImageProcessor``: its ``crop_size``, ``image_mean`` and ``image_std``.

    Returns:
        ``(N, 3, h, w)`` CLIP input.
    """
    from kornia.filters import gaussian_blur2d

    size = (feature_extractor.crop_size["height"], feature_extractor.crop_size["width"])
    sigmas = tuple(max((have / want - 1.0) / 2.0, 0.001) for have, want in zip(images.shape[-2:], size))
    kernel = tuple(int(max(4.0 * sigma, 3)) | 1 for sigma in sigmas)  # two sigmas each side, odd
    resized = F.interpolate(gaussian_blur2d(images, kernel, sigmas), size=size, mode="bicubic", align_corners=True)
    mean = torch.tensor(feature_extractor.image_mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(feature_extractor.image_std, device=images.device).view(1, 3, 1, 1)
    return ((resized + 1.0) / 2.0 - mean) / std


def image_prompt(frames: torch.Tensor, mask: torch.Tensor | None = None, index: int = 0) -> torch.Tensor:
    """The frame SVD is prompted with, the same for training and sampling: frame ``index``, black where
    its mask says invalid (an anchor's holes hold whatever made it left there; training sees them black).

    Args:
        frames: ``(N, H, W, 3)`` in 0..1; mask: ``(N, H, W)``, 1 = valid, or None (all valid).

    Returns:
        ``(H, W, 3)``.
    """
    frame = frames[index]
    return frame if mask is None else frame * mask[index][..., None].to(frame.dtype)


@torch.no_grad()
def encode_conditioning(models: SVDModels, frame: torch.Tensor, noise_aug_strength: float,
                        generator: torch.Generator | None = None, draws: int = 1,
                        chunk: int = VAE_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """The image prompt: CLIP image embedding ``(1, 1, D)`` of the frame, and the unscaled latents of
    ``draws`` noise augmentations of it ``(draws, 4, h, w)`` (SVD draws the noise afresh for every
    sample; training picks one of the draws at each step), encoded ``chunk`` at a time.

    Args:
        frame: ``(H, W, 3)`` in 0..1.
    """
    encoder, vae = models.image_encoder, models.vae
    x = to_model_range(frame[None], vae.device, torch.float32)
    embedding = encoder(clip_input(x, models.feature_extractor).to(encoder.device, encoder.dtype)).image_embeds[:, None]
    noise = torch.randn((draws, *x.shape[1:]), generator=generator, device=generator.device if generator else x.device)
    noisy = (x + noise_aug_strength * noise.to(x.device)).to(vae.dtype)
    latents = torch.cat([vae.encode(noisy[i : i + chunk]).latent_dist.mode() for i in range(0, draws, chunk)])
    return embedding.float(), latents.float()


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


def latent_mask(mask: torch.Tensor, erosion: int = 0) -> torch.Tensor:
    """Pixel validity ``(N, H, W)`` -> latent validity ``(N, 1, H/8, W/8)``.

    A latent counts only if every pixel of its 8x8 cell is valid (min-pool): the VAE would otherwise
    mix hole colour into it. ``erosion`` removes that many more latent pixels around holes.
    """
    valid = -F.max_pool2d(-mask.float()[:, None], kernel_size=8)
    for _ in range(erosion):
        valid = -F.max_pool2d(-valid, kernel_size=3, stride=1, padding=1)
    return (valid > 0.5).float()


def edm_loss(unet, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, conditioning_latents: torch.Tensor,
             embedding: torch.Tensor, time_ids: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """ReCapture's masked loss: the weighted denoising error, averaged over the valid latent elements only.

    Args:
        x0: clean latents ``(B, F, 4, h, w)``; ``valid``: ``(B, F, 1, h, w)`` 1 = counts, or None (all).
    """
    denoised = edm_denoise(unet, x0 + sigma.view(-1, 1, 1, 1, 1) * noise, sigma, conditioning_latents, embedding,
                           time_ids)
    weight = ((sigma**2 + 1) / sigma**2).view(-1, 1, 1, 1, 1)
    error = weight * (denoised - x0) ** 2
    if valid is None:
        return error.mean()
    valid = valid.expand_as(error)
    return (error * valid).sum() / valid.sum().clamp_min(1.0)
