"""Stage 2 on a tiny model as a library: fine-tuning learns the clip, and the sampler brings back what
was learned (the whole method through the command line, bit for bit: tests/test_no_behaviour_change.py;
through ComfyUI: tests/test_workflows.py).

The tiny VAE gets the latent scaling SVD's own factor was chosen for (unit-variance latents): with the
real factor 0.18215 a random tiny VAE's latents have a standard deviation of 0.04, the clip would be
lost under the noise, and nothing could be learned from it.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from conftest import tiny_svd_models
from recapture.config import SampleConfig, TrainConfig
from recapture.lora import apply_lora
from recapture.sampling import denoise, karras_sigmas, sample_video, with_lora
from recapture.svd_conditioning import edm_loss, encode_conditioning, encode_latents
from recapture.train import train_recapture_lora

H = W = 32
FRAMES = 4


def moving_pattern() -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    return torch.stack([torch.stack([(torch.sin(6 * x + t) + 1) / 2, (torch.cos(5 * y - t) + 1) / 2, 0.5 + 0 * x], -1)
                        for t in torch.linspace(0, 1, FRAMES)])


@pytest.fixture(scope="module")
def models():
    models = tiny_svd_models()
    models.vae.register_to_config(scaling_factor=1.0)
    spread = encode_latents(models, moving_pattern()).std().item()
    models.vae.register_to_config(scaling_factor=1.0 / spread)
    return models


def sampled_latents(models, lora, prompt: torch.Tensor, seed: int) -> torch.Tensor:
    """The latents ``sample_video`` decodes (same steps: image prompt, Karras sigmas, per-frame CFG)."""
    config = SampleConfig(steps=10, min_guidance=1.0, max_guidance=1.0, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    embedding, condition = encode_conditioning(models, prompt, config.noise_aug_strength, generator)
    sigmas = karras_sigmas(models, config.steps)
    noise = torch.randn(1, FRAMES, 4, H // 8, W // 8, generator=generator)
    return with_lora(models, lora, 1.0, 1.0,
                     lambda: denoise(models, noise * sigmas[0], sigmas, embedding, condition, config))


def fixed_noise_loss(models, lora, clip: torch.Tensor, seed: int = 7) -> float:
    """The training's denoising loss on the clip at one fixed noise draw and sigma, with (or without) the
    LoRAs applied as adapter layers."""
    unet = copy.deepcopy(models.unet)
    if lora is not None:
        apply_lora(unet, lora)
    g = torch.Generator().manual_seed(seed)
    x0 = encode_latents(models, clip)[None]
    embedding, condition = encode_conditioning(models, clip[0], 0.02, g)
    noise = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        return edm_loss(unet, x0, torch.tensor([1.0]), noise, condition[:, None].expand_as(x0), embedding,
                        torch.tensor([[6.0, 127.0, 0.02]])).item()


def psnr(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    """Relative to the clip's own variance (0 dB: as far off as a constant at its mean)."""
    return 10 * math.log10(truth.var().item() / ((estimate - truth) ** 2).mean().item())


def test_training_learns_the_clip_and_sampling_brings_it_back(models):
    """Training lowers the denoising loss on the clip, and train-then-sample is consistent: what the LoRAs
    learn from the clip is what the sampler brings back. (Masking: test_holes_are_completed_not_copied,
    tests/test_lora_training.py; checkpointing changes no gradient: tests/test_memory.py.)"""
    clip = moving_pattern()
    x0 = encode_latents(models, clip)[None]
    loss_before = fixed_noise_loss(models, None, clip)
    lora = train_recapture_lora(models, clip, torch.ones(FRAMES, H, W), clip,
                                TrainConfig(steps=20, rank=8, learning_rate=1e-2, conditioning_dropout=0.0,
                                            spatial_frames=2, p_mean=0.0, p_std=1.0, memory="fast"))
    loss_after = fixed_noise_loss(models, lora, clip)
    before = sum(psnr(sampled_latents(models, None, clip[0], seed), x0) for seed in range(3)) / 3
    after = sum(psnr(sampled_latents(models, lora, clip[0], seed), x0) for seed in range(3)) / 3
    print(f"loss at fixed noise: before {loss_before:.4f}, after {loss_after:.4f}; sampled from pure noise, PSNR "
          f"against the clip's latents: before {before:.2f} dB, after {after:.2f} dB")
    # measured 1.485 -> 1.125 and -3.59 -> -2.46 dB (training seeds 1 and 2: +1.05 and +1.03 dB): an
    # attention-only LoRA moves a tiny random UNet slowly, but the gain holds from every starting noise
    # level (sharper proofs of the parameterisation: test_sampling.py)
    assert loss_after < 0.9 * loss_before
    assert after > before + 0.8


def test_holes_are_completed_not_copied(models):
    """The anchor's holes hold a constant colour: neither the LoRAs nor the sample depend on it, and the
    sample does not paint that colour there."""
    clip = moving_pattern()
    mask = torch.ones(FRAMES, H, W)
    mask[:, :, 16:] = 0
    config = TrainConfig(steps=4, rank=4, learning_rate=5e-3)
    samples = {}
    for name, fill in (("magenta", (1.0, 0.0, 1.0)), ("green", (0.0, 1.0, 0.0))):
        anchor = torch.where(mask[..., None] > 0, clip, torch.tensor(fill))
        lora = train_recapture_lora(models, anchor, mask, clip, config)
        samples[name] = sample_video(models, lora, anchor[0] * mask[0, ..., None], FRAMES, SampleConfig(steps=4, seed=1))
    assert torch.equal(samples["magenta"], samples["green"])
    hole = samples["magenta"][:, :, 24:]  # a latent column away from the border, so no valid pixel's VAE reach
    distance = (hole - torch.tensor([1.0, 0.0, 1.0])).norm(dim=-1).mean().item()
    assert distance > 0.5, f"the hole came out {distance:.2f} from the fill colour"
