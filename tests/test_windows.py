"""Clips longer than SVD's window: windows that cover the clip, fused without seams, training on them."""

from __future__ import annotations

import doctest

import pytest
import torch

from conftest import tiny_svd_models
from recapture import windows
from recapture.config import SampleConfig, TrainConfig
from recapture.sampling import sample_video, sdedit
from recapture.windows import fuse, window_starts

H = W = 32


@pytest.fixture(scope="module")
def models():
    return tiny_svd_models()  # a 4-frame window


def test_doctests():
    assert doctest.testmod(windows).failed == 0


def test_windows_cover_the_clip_and_blend_only_where_they_overlap():
    for frames, window, overlap in ((60, 14, 4), (25, 25, 6), (61, 25, 6), (15, 14, 0), (12, 4, 2)):
        starts = window_starts(frames, window, overlap)
        covered = torch.zeros(frames)
        for start in starts:
            covered[start : start + window] += 1
        assert covered.min() >= 1 and starts[-1] + window == max(frames, window) and starts[0] == 0
        assert all(b - a <= window - overlap for a, b in zip(starts, starts[1:]))
    parts = [torch.full((1, 4, 2), float(k)) for k in range(3)]
    fused = fuse(parts, [0, 2, 4], 8, 2)
    assert fused[0, :1].eq(0).all() and fused[0, -1:].eq(2).all()  # alone: its window's own value
    assert 0 < fused[0, 2, 0] < 1 and 1 < fused[0, 4, 0] < 2  # shared: between the two
    assert window_starts(12, 4, 9) == window_starts(12, 4, 3) == list(range(9))  # a short window: all but one
    with pytest.raises(ValueError, match="window overlap must be 0 frames or more"):
        window_starts(12, 4, -1)


def seam_ratio(video: torch.Tensor, starts: list[int], window: int) -> float:
    """Mean frame-to-frame change where one window hands over to the next (the frames where a window
    ends), over the mean change elsewhere."""
    change = (video[1:] - video[:-1]).abs().mean(dim=(1, 2, 3))
    joins = {start + window - 1 for start in starts[:-1]}  # change from frame j to j + 1
    at = torch.stack([change[j] for j in sorted(joins)])
    inside = torch.stack([c for j, c in enumerate(change) if j not in joins])
    return float(at.mean() / inside.mean())


def test_windows_hand_over_smoothly_where_they_overlap(models, monkeypatch):
    """The fusion, seen through a denoiser that returns each window's prompt latent (k for window k):
    overlapping windows (stride 2) climb by at most 2/3 per frame, close to the mean slope 1/2; windows
    end to end stay flat and then jump by a whole 1 at each join."""
    import recapture.sampling
    from recapture.sampling import denoise, karras_sigmas

    monkeypatch.setattr(recapture.sampling, "edm_denoise", lambda unet, x, s, conditions, e, t: conditions)
    sigmas = karras_sigmas(models, 4)
    jumps = {}
    for overlap in (0, 2):
        starts = window_starts(12, 4, overlap)
        conditions = torch.arange(len(starts), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 4, 2, 2)
        config = SampleConfig(window_overlap=overlap, min_guidance=1.0, max_guidance=1.0)
        latents = denoise(models, torch.randn(1, 12, 4, 2, 2), sigmas, torch.zeros(len(starts), 1, 32), conditions,
                          config)
        per_frame = latents[0, :, 0, 0, 0]
        jumps[overlap] = float((per_frame[1:] - per_frame[:-1]).abs().max())
        assert per_frame[0] == 0 and per_frame[-1] == len(starts) - 1  # each end is its own window's
    assert jumps[0] == pytest.approx(1.0) and jumps[2] == pytest.approx(2 / 3), jumps


def test_a_long_clip_samples_and_refines_without_seams(models):
    """12 frames through the tiny model's 4-frame window: the change across a join is no larger than
    within windows."""
    g = torch.Generator().manual_seed(0)
    prompts = torch.rand(12, H, W, 3, generator=g)
    video = sample_video(models, None, prompts, 12, SampleConfig(steps=6, window_overlap=2))
    assert video.shape == (12, H, W, 3)
    assert seam_ratio(video, window_starts(12, 4, 2), 4) <= 1.1  # measured 1.01
    refined = sdedit(models, None, video, SampleConfig(steps=6, window_overlap=2, refine_strength=0.5))
    assert refined.shape == video.shape and seam_ratio(refined, window_starts(12, 4, 2), 4) <= 1.1


def test_training_on_a_long_clip_uses_windows_of_the_models_length(models, monkeypatch):
    import recapture.train
    from recapture.svd_conditioning import edm_loss
    from recapture.train import train_recapture_lora

    seen = []

    def record(unet, x0, sigma, noise, condition, embedding, time_ids, valid=None):
        if valid is not None:
            seen.append((x0.shape[1], valid.shape[1], condition.shape[1]))
        return edm_loss(unet, x0, sigma, noise, condition, embedding, time_ids, valid)

    monkeypatch.setattr(recapture.train, "edm_loss", record)
    g = torch.Generator().manual_seed(1)
    frames, mask = torch.rand(12, H, W, 3, generator=g), torch.ones(12, H, W)
    lora = train_recapture_lora(models, frames, mask, frames, TrainConfig(steps=4, rank=4, window_overlap=2))
    assert seen == [(4, 4, 4)] * 4 and len(lora.losses) == 4


class Cancelled(Exception):
    pass


def test_cancel_stops_within_a_window_and_leaves_the_model_as_it_was(models):
    """Progress comes a window at a time (5 windows a step here), so Cancel raised from it stops sampling and
    SDEdit of a long clip after the window running, and the LoRAs are taken out of the UNet again."""
    from recapture.train import train_recapture_lora

    g = torch.Generator().manual_seed(2)
    frames, mask = torch.rand(12, H, W, 3, generator=g), torch.ones(12, H, W)
    lora = train_recapture_lora(models, frames, mask, frames, TrainConfig(steps=1, rank=4))
    before = {k: v.clone() for k, v in models.unet.state_dict().items()}
    config = SampleConfig(steps=3, window_overlap=2, refine_strength=0.9)
    for run in (lambda cb: sample_video(models, lora, frames, 12, config, cb, mask=mask),
                lambda cb: sdedit(models, lora, frames, config, cb)):
        seen = []

        def cancel_at_second_window(step, window):
            seen.append((step, window))
            if len(seen) == 2:
                raise Cancelled

        with pytest.raises(Cancelled):
            run(cancel_at_second_window)
        assert seen == [(0, 0), (0, 1)]
        after = models.unet.state_dict()
        assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    calls = []
    sample_video(models, lora, frames, 12, SampleConfig(steps=2, window_overlap=2), lambda *a: calls.append(a), mask=mask)
    assert calls == [(s, w) for s in range(2) for w in range(5)]  # window_starts(12, 4, 2): 0, 2, 4, 6, 8


def test_the_spatial_lora_learns_from_frames_spread_over_a_long_clip(models, monkeypatch):
    """A clip longer than the spatial LoRA's pool (spatial_pool, 64 by default; 8 here): the pool is spread
    from the first frame to the last, not the first ones; a clip within the pool is taken whole."""
    import recapture.train
    from recapture.train import train_recapture_lora

    encoded = []
    encode = recapture.train.encode_latents

    def record(models, frames, chunk):
        encoded.append(frames.clone())
        return encode(models, frames, chunk)

    monkeypatch.setattr(recapture.train, "encode_latents", record)
    source = torch.arange(20.0).view(20, 1, 1, 1).expand(20, 16, 16, 3) / 20  # frame i holds i / 20
    anchor, mask = torch.rand(20, 16, 16, 3), torch.ones(20, 16, 16)
    for frames, pool in ((20, [0, 3, 5, 8, 11, 14, 16, 19]), (6, [0, 1, 2, 3, 4, 5])):
        encoded.clear()
        train_recapture_lora(models, anchor[:frames], mask[:frames], source[:frames],
                             TrainConfig(steps=1, rank=4, spatial_augment=False, spatial_pool=8, window_overlap=0))
        assert encoded[1][:, 0, 0, 0].mul(20).round().long().tolist() == pool  # [0]: the anchor, [1]: the pool
