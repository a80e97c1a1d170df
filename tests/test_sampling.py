"""Stage 2b on tiny real-class models: dual-LoRA sampling and SDEdit."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_svd_models
from recapture.lora import lora_layers
from recapture.sampling import SampleConfig, decode_latents, sample_video, sdedit
from recapture.train import TrainConfig, encode_latents, train_recapture_lora

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
                                TrainConfig(steps=5, rank=4, learning_rate=5e-3))


def test_sampling_is_seeded_and_leaves_no_lora(models, frames, lora):
    config = SampleConfig(steps=4, seed=3)
    steps = []
    a = sample_video(models, lora, frames[0], 4, config, on_step=steps.append)
    b = sample_video(models, lora, frames[0], 4, config)
    assert a.shape == (4, H, W, 3) and 0 <= a.min() and a.max() <= 1
    assert steps == [0, 1, 2, 3] and torch.equal(a, b)
    assert not lora_layers(models.unet)
    # the LoRAs matter, and at strength 0 they are off
    plain = sample_video(models, None, frames[0], 4, config)
    assert not torch.equal(a, plain)
    off = sample_video(models, lora, frames[0], 4, SampleConfig(steps=4, seed=3, temporal_strength=0,
                                                                 spatial_strength=0))
    torch.testing.assert_close(off, plain, atol=1e-5, rtol=0)


def test_sdedit_strength_zero_is_the_vae_round_trip_and_more_strength_moves_further(models, frames):
    round_trip = decode_latents(models, encode_latents(models, frames)[None])
    assert torch.equal(sdedit(models, None, frames, 0.0, SampleConfig(steps=10)), round_trip)
    distance = {s: sum(float((sdedit(models, None, frames, s, SampleConfig(steps=10, seed=k)) - round_trip).abs()
                             .mean()) for k in range(3)) for s in (0.2, 0.9)}
    assert 0 < distance[0.2] < distance[0.9]


def test_sdedit_uses_only_the_spatial_lora(models, frames, lora):
    from dataclasses import replace

    zero_temporal = replace(lora, temporal={k: v * 0 if ".lora_B." in k else v for k, v in lora.temporal.items()})
    zero_spatial = replace(lora, spatial={k: v * 0 if ".lora_B." in k else v for k, v in lora.spatial.items()})
    config = SampleConfig(steps=6, seed=1)
    with_lora = sdedit(models, lora, frames, 0.6, config)
    torch.testing.assert_close(sdedit(models, zero_temporal, frames, 0.6, config), with_lora)  # temporal ignored
    assert not torch.allclose(sdedit(models, zero_spatial, frames, 0.6, config), with_lora)  # spatial used
    with pytest.raises(ValueError, match="strength must be between 0 and 1"):
        sdedit(models, None, frames, 1.5)
    with pytest.raises(ValueError, match="frames to refine have NaN"):
        sdedit(models, None, frames.clone().fill_(float("nan")), 0.5)
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


def test_out_of_memory_becomes_advice_and_leaves_the_model_clean(models, frames, monkeypatch):
    from recapture.memory import OutOfMemory

    original = type(models.unet).forward

    def exhausted(self, *args, **kwargs):  # what a full GPU does, made to happen on the CPU
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(type(models.unet), "forward", exhausted)
    with pytest.raises(OutOfMemory, match=r"while training on 4 frames at 32x32.*fewer frames.*bf16 or fp16"):
        train_recapture_lora(models, frames, torch.ones(4, H, W), frames, TrainConfig(steps=2, rank=4))
    assert not lora_layers(models.unet)
    with pytest.raises(OutOfMemory, match="while sampling .* decode_chunk_size"):
        sample_video(models, None, frames[0], 4, SampleConfig(steps=2))
    monkeypatch.setattr(type(models.unet), "forward", original)
    sample_video(models, None, frames[0], 4, SampleConfig(steps=2))  # and it works again
