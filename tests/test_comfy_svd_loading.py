"""A single-file SVD whose architecture is not given: it is read off the file's tensor shapes.

(Parity of the converted UNet, VAE and OpenCLIP weights with ComfyUI's own modules, pickles and
non-SVD files: tests/test_svd_loading.py.)
"""

from __future__ import annotations

import pytest
import torch

from recapture.svd import load_svd

pytestmark = pytest.mark.comfy


def test_architecture_is_read_off_the_file(comfy_code, tmp_path):
    from conftest import save_tiny_single_file_svd

    path = save_tiny_single_file_svd(comfy_code, tmp_path / "tiny_svd.safetensors")
    models = load_svd(path)
    config = models.unet.config
    assert tuple(config.block_out_channels) == (64, 128) and tuple(config.num_attention_heads) == (1, 2)
    assert config.layers_per_block == 1 and config.cross_attention_dim == 64 and models.num_frames == 14
    assert models.image_encoder.config.hidden_size == 64 and models.feature_extractor.crop_size["height"] == 32
    assert not any(t.is_meta for m in (models.unet, models.vae, models.image_encoder)
                   for t in [*m.parameters(), *m.buffers()])
    with torch.no_grad():  # it runs
        models.image_encoder(torch.randn(1, 3, 32, 32))
