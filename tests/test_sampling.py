"""Stage 2b on tiny real-class models: dual-LoRA sampling and SDEdit."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_svd_models
from recapture.config import SampleConfig, TrainConfig
from recapture.lora import lora_layers
from recapture.sampling import sample_video, sdedit
from recapture.svd_conditioning import decode_latents, encode_latents
from recapture.train import train_recapture_lora

H = W = 32


@pytest.fixture(scope="module")
def models():
    return tiny_svd_models()


@pytest.fixture(scope="module")
def frames():
    y, x = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    return torch.stack([torch.stack([(torch.sin(6 * x + t) + 1) / 2, (torch.cos(5 * y - t) + 1) / 2, 0.5 + 0 * x], -1)
                        for t in torch.linspace(0, 1, 4)])


@pytest.fixture(scope="module")
def lora(models, frames):
    return train_recapture_lora(models, frames, torch.ones(4, H, W), frames,
                                TrainConfig(steps=5, rank=4, learning_rate=5e-3, memory="fast"))


def test_sampling_is_seeded_and_leaves_no_lora(models, frames, lora):
    config = SampleConfig(steps=4, seed=3)
    steps = []
    a = sample_video(models, lora, frames[0], 4, config, on_step=lambda step, window: steps.append((step, window)))
    b = sample_video(models, lora, frames[0], 4, config)
    assert a.shape == (4, H, W, 3) and 0 <= a.min() and a.max() <= 1
    assert steps == [(0, 0), (1, 0), (2, 0), (3, 0)] and torch.equal(a, b)  # one window
    assert not lora_layers(models.unet)
    # the LoRAs matter, and at strength 0 they are off
    plain = sample_video(models, None, frames[0], 4, config)
    assert not torch.equal(a, plain)
    off = sample_video(models, lora, frames[0], 4, SampleConfig(steps=4, seed=3, temporal_strength=0,
                                                                 spatial_strength=0))
    torch.testing.assert_close(off, plain, atol=1e-5, rtol=0)


def test_merged_loras_denoise_like_adapter_layers_and_leave_the_base_exact(models, frames, lora):
    """The sampler folds the LoRAs into the weights (``with_lora``): that UNet denoises as the UNet with
    peft's adapter layers (``apply_lora``) at the same strengths, and the base weights come back exact."""
    import copy
    from dataclasses import replace

    from recapture.lora import apply_lora
    from recapture.sampling import with_lora
    from recapture.svd_conditioning import edm_denoise, encode_conditioning

    before = {k: v for k, v in models.unet.state_dict().items()}
    snapshot = {k: v.clone() for k, v in before.items()}
    g = torch.Generator().manual_seed(2)
    x0 = encode_latents(models, frames)[None]
    embedding, condition = encode_conditioning(models, frames[0], 0.02, g)
    noisy, sigma = x0 + 2.0 * torch.randn(x0.shape, generator=g), torch.tensor([2.0])
    time_ids = torch.tensor([[6.0, 127.0, 0.02]])

    def denoised(unet):
        with torch.no_grad():
            return edm_denoise(unet, noisy, sigma, condition[:, None].expand_as(x0), embedding, time_ids)

    merged = with_lora(models, lora, 0.7, 1.3, lambda: denoised(models.unet))
    with_layers = copy.deepcopy(models.unet)
    apply_lora(with_layers, lora, temporal=0.7, spatial=1.3)
    assert lora_layers(with_layers) and not lora_layers(models.unet)
    torch.testing.assert_close(merged, denoised(with_layers), atol=1e-5, rtol=0)
    assert (merged - denoised(models.unet)).abs().max() > 1e-3  # the merge did something
    after = models.unet.state_dict()
    assert all(after[k] is before[k] or after[k].data_ptr() == before[k].data_ptr() for k in before)
    assert all(torch.equal(after[k], snapshot[k]) for k in snapshot)

    # a LoRA for another model is refused and leaves nothing merged
    foreign = replace(lora, spatial={**lora.spatial, "diffusion_model.output_blocks.9.1.transformer_blocks.0.attn1."
                                                     "to_q.lora_A.weight": torch.zeros(4, 32)})
    with pytest.raises(ValueError, match="spatial LoRA has 1 weights this UNet has no layer for"):
        sample_video(models, foreign, frames[0], 4, SampleConfig(steps=4, seed=2))
    assert all(torch.equal(models.unet.state_dict()[k], snapshot[k]) for k in snapshot)


def svd_pipeline(models):
    """diffusers' own StableVideoDiffusionPipeline on the same tiny model: the reference sampler."""
    from diffusers import StableVideoDiffusionPipeline

    pipe = StableVideoDiffusionPipeline(vae=models.vae, image_encoder=models.image_encoder, unet=models.unet,
                                        scheduler=models.scheduler, feature_extractor=models.feature_extractor)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _denoise_with_c_noise(unet, noisy, sigma, conditioning_latents, embedding, time_ids, c_noise):
    s = sigma.view(-1, 1, 1, 1, 1)
    v = unet(torch.cat([noisy / torch.sqrt(s**2 + 1), conditioning_latents], dim=2), c_noise,
             encoder_hidden_states=embedding, added_time_ids=time_ids).sample
    return noisy / (s**2 + 1) - s / torch.sqrt(s**2 + 1) * v


def test_sampler_is_svds_own_sampler(models, frames, monkeypatch):
    """Our sampler reproduces diffusers' StableVideoDiffusionPipeline step for step (Euler over the Karras
    sigmas, v-prediction preconditioning, c_noise, image prompt, per-frame CFG, added time ids, latent
    scaling, decoding): the same seed gives the same frames. A mismatch in any of them fails this."""
    config = SampleConfig(steps=6, seed=3, min_guidance=1.0, max_guidance=3.0, noise_aug_strength=0.02)
    reference = svd_pipeline(models)(
        image=frames[0].permute(2, 0, 1)[None], height=H, width=W, num_frames=4, num_inference_steps=config.steps,
        min_guidance_scale=config.min_guidance, max_guidance_scale=config.max_guidance, fps=config.fps,
        motion_bucket_id=config.motion_bucket_id, noise_aug_strength=config.noise_aug_strength,
        generator=torch.Generator().manual_seed(config.seed), output_type="pt").frames[0].permute(0, 2, 3, 1)
    ours = sample_video(models, None, frames[0], 4, config)
    assert (ours - reference).abs().max() < 1e-4  # measured 3e-6 (fp32 on the CPU)

    # the comparison is sharp enough to catch a wrong noise conditioning
    import recapture.sampling

    monkeypatch.setattr(recapture.sampling, "edm_denoise",
                        lambda unet, x, s, c, e, t: _denoise_with_c_noise(unet, x, s, c, e, t, torch.log(s)))
    assert (sample_video(models, None, frames[0], 4, config) - reference).abs().max() > 1e-3


def test_training_denoiser_is_the_samplers(models, frames):
    """The denoiser the training loss scores, ``edm_denoise``, is what diffusers' SVD scheduler computes
    at every sampling step (``pred_original_sample``), so training and sampling share one parameterisation."""
    import copy

    from recapture.svd_conditioning import edm_denoise, encode_conditioning

    g = torch.Generator().manual_seed(0)
    x0 = encode_latents(models, frames)[None]
    embedding, condition = encode_conditioning(models, frames[0], 0.02, g)
    condition = condition[:, None].expand_as(x0)
    time_ids = torch.tensor([[6.0, 127.0, 0.02]])
    scheduler = copy.deepcopy(models.scheduler)
    scheduler.set_timesteps(8)
    for i in (0, 3, 6):
        step = copy.deepcopy(scheduler)
        step._step_index = i
        sigma, t = step.sigmas[i], step.timesteps[i]
        noisy = x0 + sigma * torch.randn(x0.shape, generator=g)
        with torch.no_grad():
            model_input = torch.cat([step.scale_model_input(noisy, t), condition], dim=2)
            v = models.unet(model_input, t, encoder_hidden_states=embedding, added_time_ids=time_ids).sample
            reference = step.step(v, t, noisy).pred_original_sample
            ours = edm_denoise(models.unet, noisy, sigma[None], condition, embedding, time_ids)
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4 * float(sigma))


def test_sdedit_strength_zero_is_the_vae_round_trip_and_more_strength_moves_further(models, frames):
    round_trip = decode_latents(models, encode_latents(models, frames)[None])
    assert torch.equal(sdedit(models, None, frames, SampleConfig(steps=10, refine_strength=0.0)), round_trip)
    distance = {s: sum(float((sdedit(models, None, frames, SampleConfig(steps=10, seed=k, refine_strength=s))
                              - round_trip).abs().mean()) for k in range(3)) for s in (0.2, 0.9)}
    assert 0 < distance[0.2] < distance[0.9]


def test_sdedit_uses_only_the_spatial_lora(models, frames, lora):
    from dataclasses import replace

    zero_temporal = replace(lora, temporal={k: v * 0 if ".lora_B." in k else v for k, v in lora.temporal.items()})
    zero_spatial = replace(lora, spatial={k: v * 0 if ".lora_B." in k else v for k, v in lora.spatial.items()})
    config = SampleConfig(steps=6, seed=1, refine_strength=0.6)
    with_lora = sdedit(models, lora, frames, config)
    torch.testing.assert_close(sdedit(models, zero_temporal, frames, config), with_lora)  # temporal ignored
    assert not torch.allclose(sdedit(models, zero_spatial, frames, config), with_lora)  # spatial used
    with pytest.raises(ValueError, match="strength must be between 0 and 1"):
        sdedit(models, None, frames, SampleConfig(refine_strength=1.5))
    with pytest.raises(ValueError, match="frames to refine have NaN"):
        sdedit(models, None, frames.clone().fill_(float("nan")), SampleConfig(refine_strength=0.5))
    with pytest.raises(ValueError, match="image prompt frame has NaN"):
        sample_video(models, None, frames[0].clone().fill_(float("inf")), 4)


def test_training_releases_its_memory_before_sampling(models, frames):
    """After training only the returned LoRA weights stay alive: no optimizer state, gradients,
    cached latents or adapter layers are left for the sampler to carry."""
    import gc

    def live_tensor_bytes() -> int:
        gc.collect()
        return sum(o.numel() * o.element_size() for o in gc.get_objects() if torch.is_tensor(o) and not o.is_meta)

    before = live_tensor_bytes()
    lora = train_recapture_lora(models, frames, torch.ones(4, H, W), frames, TrainConfig(steps=3, rank=8))
    grown = live_tensor_bytes() - before
    kept = sum(v.numel() * v.element_size() for state in (lora.temporal, lora.spatial) for v in state.values())
    assert grown <= kept * 1.05 + 64 * 1024, f"{grown} bytes stayed alive, the LoRA itself is {kept}"
    assert not lora_layers(models.unet) and all(p.grad is None for p in models.unet.parameters())


def test_out_of_memory_says_what_ran_and_leaves_the_model_clean(models, frames, monkeypatch):
    """A full GPU becomes ``OutOfMemory`` carrying the stage and the clip's size (the node and the command
    line word the ways out from these: tests/test_comfy_robustness.py, tests/test_cli.py)."""
    from recapture.memory import OutOfMemory

    original = type(models.unet).forward

    def exhausted(self, *args, **kwargs):  # what a full GPU does, made to happen on the CPU
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(type(models.unet), "forward", exhausted)
    with pytest.raises(OutOfMemory, match=r"^out of GPU memory while training on 4 frames at 32x32$") as caught:
        train_recapture_lora(models, frames, torch.ones(4, H, W), frames, TrainConfig(steps=2, rank=4))
    assert (caught.value.stage, caught.value.frames, caught.value.height, caught.value.width) == ("training", 4, 32, 32)
    assert isinstance(caught.value.__cause__, torch.OutOfMemoryError)
    assert not lora_layers(models.unet)
    with pytest.raises(OutOfMemory, match=r"^out of GPU memory while sampling 4 frames at 32x32$") as caught:
        sample_video(models, None, frames[0], 4, SampleConfig(steps=2))
    assert caught.value.stage == "sampling"
    with pytest.raises(OutOfMemory, match=r"^out of GPU memory while refining 4 frames at 32x32$") as caught:
        sdedit(models, None, frames, SampleConfig(steps=2, refine_strength=0.5))
    assert caught.value.stage == "refining"
    monkeypatch.setattr(type(models.unet), "forward", original)
    sample_video(models, None, frames[0], 4, SampleConfig(steps=2))  # and it works again


def test_out_of_memory_suggests_a_smaller_size_and_takes_a_front_ends_advice():
    from recapture.memory import OutOfMemory

    error = OutOfMemory("sampling", 25, 576, 1024)
    error.__cause__ = torch.OutOfMemoryError("CUDA out of memory")
    assert error.smaller_size() == "512x256"  # about half, in multiples of 64
    assert OutOfMemory("training", 4, 64, 64).smaller_size() == "64x64"  # never below 64
    advised = error.with_advice("Ways out: fewer frames.")
    assert str(advised) == "out of GPU memory while sampling 25 frames at 1024x576. Ways out: fewer frames."
    assert (advised.stage, advised.frames, advised.height, advised.width) == ("sampling", 25, 576, 1024)
    assert advised.__cause__ is error.__cause__ and str(error).endswith("1024x576")
    windowed = OutOfMemory("sampling", 60, 576, 1024, window=25).with_advice("Ways out: a lower resolution.")
    assert str(windowed) == ("out of GPU memory while sampling 60 frames at 1024x576 (25 at a time: a shorter clip "
                             "would not need less). Ways out: a lower resolution.") and windowed.window == 25
