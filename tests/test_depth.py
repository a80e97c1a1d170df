"""Depth estimation from a local transformers folder, and depth handed over by other packs' nodes."""

from __future__ import annotations

import pytest
import torch

from recapture.depth import (DepthModelError, depth_from_image, estimate_depth, load_depth_model,
                             match_depth_size, nearness)
from recapture.types import DepthMaps

from conftest import save_tiny_depth_model


@pytest.fixture(scope="module")
def tiny_dpt(tmp_path_factory):
    return save_tiny_depth_model(tmp_path_factory.mktemp("models") / "tiny-dpt")


def test_tiny_model_gives_relative_inverse_depth_at_frame_size(tiny_dpt):
    estimator = load_depth_model(tiny_dpt)
    assert estimator.kind == "inverse"
    frames = torch.rand(3, 48, 64, 3)
    seen = []
    depth = estimate_depth(estimator, frames, batch_size=2, on_batch=seen.append)
    assert seen == [2, 1]
    assert depth.values.shape == (3, 48, 64) and torch.isfinite(depth.values).all()
    # batching does not change the result
    one_batch = estimate_depth(estimator, frames, batch_size=3)
    torch.testing.assert_close(depth.values, one_batch.values, rtol=1e-4, atol=1e-4)


def test_a_long_clip_goes_through_in_batches(tiny_dpt):
    """60 frames: the model never sees more than batch_size at once, and the depth lands in host memory."""
    estimator = load_depth_model(tiny_dpt)
    seen = []
    hook = estimator.model.register_forward_pre_hook(lambda _m, _a, kw: seen.append(len(kw["pixel_values"])),
                                                     with_kwargs=True)
    try:
        depth = estimate_depth(estimator, torch.rand(60, 32, 32, 3), batch_size=8)
    finally:
        hook.remove()
    assert seen == [8] * 7 + [4] and depth.values.shape == (60, 32, 32) and depth.values.device.type == "cpu"


def test_folder_without_safetensors_is_refused(tiny_dpt, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_dpt / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(DepthModelError, match="only safetensors"):
        load_depth_model(folder)
    with pytest.raises(DepthModelError, match="no config.json"):
        load_depth_model(tmp_path)


def test_depth_from_other_nodes():
    image = torch.rand(2, 8, 12, 1).expand(2, 8, 12, 3)
    torch.testing.assert_close(depth_from_image(image), image[..., 0])
    assert depth_from_image(torch.rand(8, 12)).shape == (1, 8, 12)
    # same aspect ratio: resized; another aspect ratio: a clear error
    assert match_depth_size(torch.rand(2, 9, 16), 18, 32).shape == (2, 18, 32)
    with pytest.raises(ValueError, match="another aspect ratio"):
        match_depth_size(torch.rand(2, 10, 10), 18, 32)


def test_nearness_is_normalised_over_the_clip():
    metric = DepthMaps(values=torch.tensor([[[1.0, 2.0]], [[4.0, 0.0]]]), kind="metric")
    near = nearness(metric)
    torch.testing.assert_close(near, torch.tensor([[[1.0, 1 / 3]], [[0.0, 0.0]]]))
