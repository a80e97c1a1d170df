"""Stage 2 held to SVD's reference at the real model's sizes, where tiny models alone cannot show a
difference: CLIP preprocessing, the VAE's dtype, float16 training, the conditioning's noise
augmentation, the spatial LoRA's augmentation, the image prompt, LoRA-carried settings and SDEdit's
strength as a noise level (docs/fidelity.md lists each with its test)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from conftest import tiny_svd_models
from recapture.config import SampleConfig, TrainConfig
from recapture.svd import FEATURE_EXTRACTOR_CONFIG
from recapture.svd_conditioning import clip_input

H = W = 32


@pytest.fixture(scope="module")
def models():
    return tiny_svd_models()


def photo(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """``(3, H, W)`` in -1..1 with the fine detail that shows aliasing: smooth shading, edges and grain."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    shading = torch.stack([x, y, (x + y) / 2])
    stripes = (torch.sin(x * width / 3.1) * torch.cos(y * height / 4.3) > 0).float()[None]
    grain = torch.rand(3, height, width, generator=g)
    return (0.5 * shading + 0.3 * stripes + 0.2 * grain) * 2 - 1


@pytest.mark.parametrize("height, width", [(576, 1024), (480, 640), (768, 512)])
def test_clip_sees_what_svd_was_trained_with(height, width):
    """Against diffusers' SVD pipeline's own preprocessing of an image (``_resize_with_antialiasing`` to
    224 then the CLIP image processor's normalisation), at SVD's size and at other aspect ratios."""
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(**FEATURE_EXTRACTOR_CONFIG)
    image = photo(height, width)[None]
    resized = (_resize_with_antialiasing(image, (224, 224)) + 1.0) / 2.0
    reference = processor(images=resized, do_normalize=True, do_center_crop=False, do_resize=False, do_rescale=False,
                          return_tensors="pt").pixel_values
    ours = clip_input(image, processor)
    assert ours.shape == reference.shape == (1, 3, 224, 224)
    assert (ours - reference).abs().max() < 1e-5
    # what an antialiased bicubic resize (the obvious alternative) gives instead: far off
    plain = torch.nn.functional.interpolate(image, size=(224, 224), mode="bicubic", antialias=True)
    plain = processor(images=(plain + 1) / 2, do_normalize=True, do_center_crop=False, do_resize=False,
                      do_rescale=False, return_tensors="pt").pixel_values
    assert (plain - reference).pow(2).mean().sqrt() / reference.pow(2).mean().sqrt() > 0.1  # measured 0.19-0.25


@pytest.fixture(scope="module")
def clip():
    """4 frames of a moving pattern at 32x32 and a mask whose right third is a hole."""
    y, x = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    frames = torch.stack([torch.stack([(torch.sin(6 * x + t) + 1) / 2, (torch.cos(5 * y - t) + 1) / 2,
                                       0.5 + 0.2 * torch.sin(9 * x * y + t)], dim=-1) for t in torch.linspace(0, 1, 4)])
    mask = torch.ones(4, H, W)
    mask[:, :, 20:] = 0
    return frames, mask


def first_step_gradients(models, clip, monkeypatch, loss_scale: float, **config) -> torch.Tensor:
    """Every LoRA gradient of the first training step, as the optimizer gets it, with the losses
    multiplied by ``loss_scale``."""
    import recapture.train
    from recapture.svd_conditioning import edm_loss
    from recapture.train import train_recapture_lora

    frames, mask = clip
    seen = []
    monkeypatch.setattr(recapture.train, "edm_loss", lambda *a, **k: edm_loss(*a, **k) * loss_scale)
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: seen.append(
        torch.cat([p.grad.float().flatten() for group in self.param_groups for p in group["params"]])))
    train_recapture_lora(models, frames * mask[..., None], mask, frames,
                         TrainConfig(steps=1, rank=4, conditioning_dropout=0.0, **config))
    assert seen, "the optimizer never stepped"
    return seen[0]


def test_float16_training_keeps_its_gradients_at_the_real_size(models, clip, monkeypatch):
    """The masked loss is a mean over ~516k latent elements at 14x576x1024, so each element's gradient is
    ~2000 times smaller than on this tiny clip: the tiny losses are scaled down by that much. A float16
    base must still give the LoRAs the float32 base's gradients."""
    real = 14 * 4 * (576 // 8) * (1024 // 8)
    tiny = 4 * 4 * (H // 8) * (W // 8)
    half = copy.copy(models)
    half.unet, half.image_encoder = copy.deepcopy(models.unet).half(), copy.deepcopy(models.image_encoder).half()
    reference = first_step_gradients(models, clip, monkeypatch, tiny / real)
    ours = first_step_gradients(half, clip, monkeypatch, tiny / real)
    assert reference.abs().max() > 0
    assert (ours - reference).norm() / reference.norm() < 0.05


def recorded_losses(models, clip, monkeypatch, **config) -> list[dict]:
    """What each ``edm_loss`` call of a short training saw: its kind (temporal: masked), clean latents
    and conditioning latents."""
    import recapture.train
    from recapture.svd_conditioning import edm_loss
    from recapture.train import train_recapture_lora

    calls = []

    def record(unet, x0, sigma, noise, condition, embedding, time_ids, valid=None):
        calls.append({"kind": "spatial" if valid is None else "temporal", "x0": x0.clone(), "condition": condition.clone()})
        return edm_loss(unet, x0, sigma, noise, condition, embedding, time_ids, valid)

    monkeypatch.setattr(recapture.train, "edm_loss", record)
    frames, mask = clip
    train_recapture_lora(models, frames * mask[..., None], mask, frames,
                         TrainConfig(**{"steps": 3, "rank": 4, "conditioning_dropout": 0.0} | config))
    return calls


def test_the_image_prompts_noise_augmentation_is_drawn_afresh_each_step(models, clip, monkeypatch):
    calls = recorded_losses(models, clip, monkeypatch)
    temporal = [c["condition"][0, 0] for c in calls if c["kind"] == "temporal"]
    spatial = [c["condition"][:, 0] for c in calls if c["kind"] == "spatial"]
    assert len(temporal) == len(spatial) == 3
    assert not torch.equal(temporal[0], temporal[1]) or not torch.equal(temporal[1], temporal[2])
    assert not all(torch.equal(spatial[0], s) for s in spatial[1:])
    # without noise every draw is the same latent: the differences are the augmentation's noise
    calls = recorded_losses(models, clip, monkeypatch, noise_aug_strength=0.0, steps=2)
    temporal = [c["condition"][0, 0] for c in calls if c["kind"] == "temporal"]
    assert torch.equal(temporal[0], temporal[1])


def test_sampling_and_refining_use_the_given_noise_augmentation_once(models, clip, monkeypatch):
    import recapture.sampling
    from recapture.sampling import sample_video, sdedit

    strengths = []
    encode = recapture.sampling.encode_conditioning
    monkeypatch.setattr(recapture.sampling, "encode_conditioning",
                        lambda m, frame, strength, *a, **k: strengths.append(strength) or encode(m, frame, strength, *a, **k))
    frames, _ = clip
    sample_video(models, None, frames[0], 4, SampleConfig(steps=2, noise_aug_strength=0.07))
    sdedit(models, None, frames, SampleConfig(steps=2, noise_aug_strength=0.11, refine_strength=0.5))
    assert strengths == [0.07, 0.11]


def test_the_spatial_lora_sees_source_frames_reframed_when_augmented(models, clip, monkeypatch):
    from recapture.svd_conditioning import encode_latents

    frames, _ = clip
    plain = encode_latents(models, frames)  # (4, 4, h, w): the unaugmented source latents

    def unaugmented(x0: torch.Tensor) -> bool:
        return all(any(torch.allclose(frame, p, atol=1e-5) for p in plain) for frame in x0[:, 0])

    calls = recorded_losses(models, clip, monkeypatch, spatial_augment=False, steps=2)
    assert all(unaugmented(c["x0"]) for c in calls if c["kind"] == "spatial")
    calls = recorded_losses(models, clip, monkeypatch)
    seen = torch.cat([c["x0"][:, 0] for c in calls if c["kind"] == "spatial"])
    assert not any(any(torch.allclose(frame, p, atol=1e-5) for p in plain) for frame in seen)
    assert len({tuple(frame.flatten()[:8].tolist()) for frame in seen}) > 4  # many framings, not one


def test_reframing_crops_scales_and_mirrors():
    from recapture.train import reframed

    x = torch.linspace(0, 1, 64)
    frames = torch.stack([x.view(1, -1).expand(32, -1)] * 3, dim=-1).expand(200, -1, -1, -1)  # brightens to the right
    out = reframed(frames, torch.Generator().manual_seed(0))
    assert out.shape == frames.shape
    rising = (out[:, 16, -1, 0] > out[:, 16, 0, 0])
    assert 0.35 < rising.float().mean() < 0.65  # about half mirrored
    span = (out[:, 16, -1, 0] - out[:, 16, 0, 0]).abs()
    assert span.min() > 0.79 - 1e-3 and span.max() <= 1.0 and span.std() > 0.03  # crops of 80-100 % of the width


def test_sdedit_strength_is_a_noise_level_whatever_the_steps(models):
    """Strength s starts SDEdit where noise is the share s of the noised latents' variance:
    sigma^2 / (1 + sigma^2) = s, at 25 steps as at 30; the steps only fill the way down."""
    from recapture.sampling import refine_sigmas, refine_steps, sdedit_sigma

    for strength in (0.2, 0.5, 0.6, 0.9):
        starts = {steps: float(refine_sigmas(models, SampleConfig(steps=steps, refine_strength=strength))[0])
                  for steps in (25, 30)}
        assert starts[25] == starts[30] == pytest.approx(sdedit_sigma(strength))
        assert starts[25] ** 2 / (1 + starts[25] ** 2) == pytest.approx(strength)
    sigmas = refine_sigmas(models, SampleConfig(steps=25, refine_strength=0.6))
    assert torch.all(sigmas[1:] < sigmas[:-1]) and sigmas[-1] == 0
    assert refine_steps(models, SampleConfig(steps=30, refine_strength=0.6)) > refine_steps(models, SampleConfig(
        steps=25, refine_strength=0.6)) > refine_steps(models, SampleConfig(steps=25, refine_strength=0.2)) > 0
    assert refine_steps(models, SampleConfig(refine_strength=0.0)) == 0
    full = refine_sigmas(models, SampleConfig(steps=25, refine_strength=1.0))  # pure noise: the whole schedule
    assert torch.equal(full, refine_sigmas(models, SampleConfig(steps=25, refine_strength=0.999999)))
    assert len(full) == 26 and math.isclose(float(full[0]), float(models.scheduler.sigmas.max()), rel_tol=1e-6)


def test_sampling_conditioning_is_the_loras_unless_given():
    from recapture.config import FROM_LORA, Conditioning, conditioning_for

    trained = Conditioning(fps=12, motion_bucket_id=40, noise_aug_strength=0.1)
    assert conditioning_for(trained) == trained
    assert conditioning_for(trained, **FROM_LORA) == trained
    assert conditioning_for(trained, fps=None, motion_bucket_id=90, noise_aug_strength=-1.0) == Conditioning(12, 90, 0.1)
    assert conditioning_for(trained, fps=7, motion_bucket_id=127, noise_aug_strength=0.02) == Conditioning()
