"""Single-file SVD checkpoints: converted weights against ComfyUI's own UNet, VAE and OpenCLIP conversion."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from conftest import to_openclip
from recapture.svd import (CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX, build_tiny_svd, load_svd, openclip_to_clip_vision)

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def checkpoint(comfy_code, tmp_path_factory):
    """A tiny single-file SVD in SGM layout made from ComfyUI's own UNet and VAE classes."""
    torch.manual_seed(0)
    unet, vae = comfy_code.tiny_unet(), comfy_code.tiny_vae()
    for module in (unet, vae):  # ComfyUI's disable_weight_init leaves some weights uninitialised
        for p in module.parameters():
            torch.nn.init.normal_(p, std=0.05)
    clip = build_tiny_svd(seed=1).image_encoder
    tensors = {UNET_PREFIX + k: v for k, v in unet.state_dict().items()}
    tensors |= {VAE_PREFIX + k: v for k, v in vae.state_dict().items()}
    tensors |= {CLIP_PREFIX + k: v for k, v in to_openclip(clip.state_dict()).items()}
    path = tmp_path_factory.mktemp("ckpt") / "tiny_svd_xt.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path, unet, vae, clip


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def test_openclip_names_agree_with_comfyuis_converter(comfy_code, checkpoint):
    _, _, _, clip = checkpoint
    openclip = to_openclip(clip.state_dict())
    ours = openclip_to_clip_vision(openclip)
    theirs = comfy_code.clip_vision.convert_to_transformers({CLIP_PREFIX + k: v for k, v in openclip.items()},
                                                             CLIP_PREFIX)
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_single_file_loads_with_parity_to_comfyui(comfy_code, checkpoint):
    path, comfy_unet, comfy_vae, clip = checkpoint
    models = load_svd_file(path)
    assert models.name == "tiny_svd_xt.safetensors"
    # UNet: same call in both conventions
    g = torch.Generator().manual_seed(0)
    x, emb = torch.randn(1, 4, 8, 4, 4, generator=g), torch.randn(1, 1, 32, generator=g)
    ids, c_noise = torch.tensor([[5.0, 127.0, 0.02]]), torch.tensor([0.3])
    with torch.no_grad():
        ours = models.unet(x, c_noise, encoder_hidden_states=emb, added_time_ids=ids).sample.reshape(4, 4, 4, 4)
        y = torch.flatten(torch.cat([comfy_code.Timestep(8)(ids[0, i : i + 1]) for i in range(3)]))[None]
        theirs = comfy_unet(x.reshape(4, 8, 4, 4), c_noise.repeat(4), context=emb.repeat_interleave(4, 0),
                            y=y.repeat(4, 1), num_video_frames=4)
    assert rel(ours, theirs) < 1e-5
    # VAE: encoder moments and the temporal decoder
    image = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        ours_mean = models.vae.encode(image).latent_dist.mode()
        theirs_mean = comfy_vae.encoder(image)[:, :4]
        assert rel(ours_mean, theirs_mean) < 1e-4
        z = torch.randn(4, 4, 4, 4, generator=g)
        assert rel(models.vae.decode(z, num_frames=4).sample, comfy_vae.decoder(z)) < 1e-4  # ComfyUI: the batch is one clip
    # image encoder: the same as the tower the file was written from
    pixels = torch.randn(1, 3, 32, 32, generator=g)
    with torch.no_grad():
        assert torch.allclose(models.image_encoder(pixels).image_embeds, clip(pixels).image_embeds, atol=1e-6)


def load_svd_file(path):
    from recapture.svd import load_svd_single_file

    return load_svd_single_file(path, architecture=build_tiny_svd)


@pytest.mark.parametrize("keys, looks_like", [
    ({"conditioner.embedders.1.model.ln_final.weight": 1, "model.diffusion_model.input_blocks.0.0.weight": 1},
     "an SDXL checkpoint"),
    ({"cond_stage_model.transformer.x": 1, "model.diffusion_model.input_blocks.0.0.weight": 1},
     "a Stable Diffusion 1.x"),
    ({"diffusion_model.input_blocks.1.1.lora_A.weight": 1}, "a LoRA file"),
    ({"encoder.conv_in.weight": 1, "decoder.conv_in.weight": 1}, "a VAE on its own"),
])
def test_files_that_are_not_svd_say_what_they_look_like(tmp_path, keys, looks_like):
    path = tmp_path / "other.safetensors"
    save_file({k: torch.zeros(1) for k in keys}, str(path))
    with pytest.raises(ValueError, match=f"not a Stable Video Diffusion checkpoint: it looks like {looks_like}"):
        load_svd(path)


def test_pickles_are_refused(tmp_path):
    (tmp_path / "svd.ckpt").write_bytes(b"not unpickled")
    with pytest.raises(ValueError, match="never pickled"):
        load_svd(tmp_path / "svd.ckpt")


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


def test_inferred_unet_of_a_full_size_file_is_svd_xts(comfy_code, checkpoint):
    from diffusers import UNetSpatioTemporalConditionModel

    from recapture.svd import architecture_from_checkpoint, unet_diffusers_to_sgm, unet_layout

    with torch.device("meta"):
        real = UNetSpatioTemporalConditionModel()  # SVD-XT's UNet: shapes only, no memory
    unet = {unet_diffusers_to_sgm(k, **unet_layout(real)): v for k, v in real.state_dict().items()}
    path, _, vae, clip = checkpoint
    parts = {UNET_PREFIX: unet, VAE_PREFIX: vae.state_dict(), CLIP_PREFIX: to_openclip(clip.state_dict())}
    inferred = architecture_from_checkpoint(parts, 25).unet.config
    for key in ("block_out_channels", "num_attention_heads", "layers_per_block", "cross_attention_dim",
                "addition_time_embed_dim", "projection_class_embeddings_input_dim", "down_block_types",
                "up_block_types", "in_channels", "out_channels"):
        as_tuple = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
        assert as_tuple(inferred[key]) == as_tuple(real.config[key]), key
