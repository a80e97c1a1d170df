"""Steady depth against ray-traced ground truth: per-frame scale/shift drift removed down to the noise."""

from __future__ import annotations

import math

import pytest
import torch

from recapture import camera, synthetic
from recapture.depth_align import align_depth, robust_affine
from recapture.pointcloud import make_point_cloud
from recapture.render import render_anchor

H, W, N = 72, 128, 10
NOISE = 0.002  # of the disparity range


@pytest.fixture(scope="module")
def clip():
    """The synthetic room with the sliding card: exact disparity, and the same corrupted as a per-frame
    monocular model would give it (a random scale and shift per frame, plus noise)."""
    clip = synthetic.source_clip(N, H, W)
    disparity = 1.0 / clip.depth
    g = torch.Generator().manual_seed(3)
    spread = float(disparity.max() - disparity.min())
    scale = 0.6 + torch.rand(N, 1, 1, generator=g)
    shift = (torch.rand(N, 1, 1, generator=g) - 0.5) * 0.6 * spread
    corrupted = scale * disparity + shift + NOISE * spread * torch.randn(disparity.shape, generator=g)
    return clip, disparity, corrupted, spread


def drift(estimate: torch.Tensor, truth: torch.Tensor, spread: float) -> float:
    """RMS error against the truth after the one scale and shift a whole clip may differ by (relative
    depth carries no absolute scale), as a fraction of the disparity range."""
    s, t = robust_affine(estimate.flatten(), truth.flatten(), iterations=0)  # plain least squares
    return float((s * estimate + t - truth).pow(2).mean().sqrt()) / spread


def test_robust_affine_ignores_what_moved():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5000, generator=g)
    target = 2.5 * x - 0.7
    target[:1000] += 3.0  # a fifth of the pixels belong to something that moved
    s, t = robust_affine(x, target)
    assert s == pytest.approx(2.5, rel=1e-3) and t == pytest.approx(-0.7, abs=1e-3)


def test_alignment_removes_the_drift_down_to_the_noise(clip):
    _, disparity, corrupted, spread = clip
    before = drift(corrupted, disparity, spread)
    aligned = align_depth(corrupted, "inverse")
    after = drift(aligned, disparity, spread)
    # each frame's own error, once the clip's single scale/shift is removed: the noise, nothing more
    assert before > 10 * NOISE
    assert after < 1.5 * NOISE, (before, after)
    assert aligned.shape == corrupted.shape and aligned.dtype == torch.float32
    # relative depth (larger = farther) drifts affinely in its own space and aligns the same way
    relative = align_depth(-corrupted, "relative")
    assert drift(relative, -disparity, spread) < 1.5 * NOISE
    assert align_depth(corrupted, "metric") is corrupted  # metric depth has no drift to remove
    with pytest.raises(ValueError, match="unknown depth kind"):
        align_depth(corrupted, "bogus")


def anchor_psnr(clip, depth: torch.Tensor) -> float:
    """PSNR over the clip of the anchor of a 10-degree orbit against the ray-traced new views, where the
    anchor is valid and the new view was seen by the source."""
    frames, true_depth = clip.frames, clip.depth
    near, far = float(true_depth.min()), float(true_depth.max())
    cloud = make_point_cloud(frames, depth, kind="inverse", fov_deg=60.0, near=near, far=far, edge_threshold=0.04)
    path = camera.preset_path("orbit_left", N, amount=10.0, pivot_distance=3.0)
    anchor, mask = render_anchor(cloud, path)
    errors, count = 0.0, 0
    for i, time in enumerate(clip.times):
        truth, visible = synthetic.visible_from_source(synthetic.scene_at(time), torch.eye(4), clip.intrinsics,
                                                       path.poses[i], clip.intrinsics, H, W)
        both = (mask[i] > 0) & visible
        errors += float(((anchor[i] - truth)[both] ** 2).sum())
        count += int(both.sum()) * 3
    return 10 * math.log10(count / errors)


def test_the_anchor_from_aligned_depth_is_as_good_as_from_exact_depth(clip):
    source, disparity, corrupted, _ = clip
    exact = anchor_psnr(source, disparity)
    aligned = anchor_psnr(source, align_depth(corrupted, "inverse"))
    drifting = anchor_psnr(source, corrupted)
    # measured: exact 34.2 dB, aligned 33.6 dB (the noise alone costs 0.3), drifting 18 dB
    assert aligned > exact - 1.0, (exact, aligned, drifting)
    assert drifting < exact - 3.0, (exact, aligned, drifting)


def test_the_point_cloud_and_the_command_line_offer_it(clip):
    from recapture.cli import build_parser

    source, _, corrupted, _ = clip
    steady = make_point_cloud(source.frames, corrupted, kind="inverse", align_depth=True)
    by_hand = make_point_cloud(source.frames, align_depth(corrupted, "inverse"), kind="inverse")
    assert torch.equal(steady.depth, by_hand.depth)
    assert not torch.equal(make_point_cloud(source.frames, corrupted, kind="inverse").depth, steady.depth)
    base = ["anchor", "--video", "v.mp4", "--depth", "d.npy", "--depth-kind", "inverse", "--camera", "orbit_left",
            "--out", "o"]
    assert build_parser().parse_args(base + ["--align-depth"]).align_depth is True
    assert build_parser().parse_args(base).align_depth is False
