"""The multi-view anchor on tiny random models of the real classes: one pass per frame with the source
frame as the input view and the new camera filling the pass, cameras and rays as the model takes them."""

from __future__ import annotations

import pytest
import torch

from recapture import camera
from recapture.multiview import (MultiViewConfig, MultiViewModels, encode_views, multiview_anchor, near_input,
                                 seva_cameras)


def tiny_multiview_models(seed: int = 0) -> MultiViewModels:
    from diffusers import AutoencoderKL
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from recapture.seva import SevaUNet, tiny_seva_config

    torch.manual_seed(seed)
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=8, latent_channels=4,
                        sample_size=64)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                          num_attention_heads=2, image_size=32, patch_size=8,
                                                          projection_dim=32))
    processor = CLIPImageProcessor(crop_size={"height": 32, "width": 32}, size={"shortest_edge": 32})
    return MultiViewModels(SevaUNet(tiny_seva_config()).eval(), vae.eval(), clip.eval(), processor, "tiny")


@pytest.fixture(scope="module")
def models():
    return tiny_multiview_models()


def test_one_pass_per_frame_with_the_new_camera_filling_it(models, monkeypatch):
    frames = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    path = camera.preset_path("orbit_left", 2, 20.0, pivot_distance=2.5)
    calls, steps = [], []
    forward = type(models.unet).forward

    def record(self, x, t, context, plucker, num_views=None):
        marks = x[:, 4].flatten(1).amax(1).tolist()  # the input-view channel of each view
        calls.append((x.shape[0], num_views, marks[:num_views], marks[num_views:]))
        return forward(self, x, t, context, plucker, num_views)

    monkeypatch.setattr(type(models.unet), "forward", record)
    config = MultiViewConfig(steps=2, views_per_pass=4)
    anchor, mask = multiview_anchor(models, frames, path, 2.5, 60.0, config, lambda i, s: steps.append((i, s)))
    assert anchor.shape == (2, 64, 64, 3) and torch.isfinite(anchor).all() and 0 <= anchor.min() and anchor.max() <= 1
    assert torch.equal(mask, torch.ones(2, 64, 64))  # every pixel generated
    # 2 frames x 2 steps; each call: the unconditional branch (nothing marked) and the conditional one (the
    # source frame marked as view 0, the new camera in the 3 others)
    assert calls == [(8, 4, [0.0] * 4, [1.0, 0.0, 0.0, 0.0])] * 4
    assert steps == [(0, 0), (0, 1), (1, 0), (1, 1)]
    monkeypatch.setattr(type(models.unet), "forward", forward)
    again, _ = multiview_anchor(models, frames, path, 2.5, 60.0, config)
    assert torch.equal(anchor, again)  # seeded
    other, _ = multiview_anchor(models, frames, path, 2.5, 60.0, MultiViewConfig(steps=2, views_per_pass=4, seed=1))
    assert not torch.equal(anchor, other)


def test_checks_and_cameras(models):
    frames = torch.rand(2, 64, 64, 3)
    with pytest.raises(ValueError, match="the camera path has 3 cameras for 2 frames"):
        multiview_anchor(models, frames, camera.preset_path("static", 3, 0.0), 1.0, 60.0)
    with pytest.raises(ValueError, match="multiple of 64"):
        multiview_anchor(models, torch.rand(2, 48, 64, 3), camera.preset_path("static", 2, 0.0), 1.0, 60.0)
    # the static first camera is the input's: guided as a view near the input
    path = camera.preset_path("pan_left", 3, 30.0)
    poses = torch.cat([torch.eye(4)[None], path.poses])
    assert near_input(seva_cameras(poses, 2.0)).tolist() == [True, True, False, False]
    assert encode_views(models, frames).shape == (2, 4, 8, 8)
