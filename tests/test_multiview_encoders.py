"""The image VAE Stable Virtual Camera works in, loaded from a file as ComfyUI users keep it, against
core ComfyUI's own SD VAE class holding the same weights (its loader assumes SD's full width, so a tiny
VAE goes into the class directly)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from recapture.multiview import MultiViewModels, decode_views, encode_views, load_image_vae

def comfy_image_vae(comfy_code, ch: int = 32):
    """A tiny SD-style image VAE of ComfyUI's own class with random weights, and its LDM-named state."""
    from comfy.ldm.models.autoencoder import AutoencoderKL

    torch.manual_seed(0)
    params = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": ch,
              "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    model = AutoencoderKL(ddconfig=params, embed_dim=4)  # SD's VAE class, with quant_conv / post_quant_conv
    state = model.state_dict()
    for k, v in state.items():  # ComfyUI leaves weights uninitialised: give every one a value
        state[k] = torch.randn_like(v) * (0.5 / max(1, v[0].numel()) ** 0.5) if v.ndim > 1 else torch.randn_like(v) * 0.1
    state = {k: v.contiguous() for k, v in state.items()}
    model.load_state_dict(state)
    return model.eval(), state


@pytest.mark.comfy_code
def test_the_image_vae_loads_as_comfyui_reads_it(comfy_code, tmp_path):
    theirs, state = comfy_image_vae(comfy_code)
    frames = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    pixels = frames.permute(0, 3, 1, 2) * 2 - 1
    with torch.no_grad():
        their_latents = theirs.encode(pixels)  # the posterior mean (ComfyUI does not sample)
        their_frames = ((theirs.decode(their_latents) + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)
    for name, stored in (("vae.safetensors", state),
                         ("sd21.safetensors", {"first_stage_model." + k: v for k, v in state.items()} |
                          {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)})):
        save_file(stored, str(tmp_path / name))
        models = MultiViewModels(None, load_image_vae(tmp_path / name), None, None)
        latents = encode_views(models, frames)
        torch.testing.assert_close(latents / 0.18215, their_latents, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(decode_views(models, their_latents * 0.18215), their_frames, atol=1e-5, rtol=1e-4)


@pytest.mark.comfy_code
def test_wrong_files_are_named(comfy_code, tmp_path):
    with pytest.raises(ValueError, match="never pickled .pt files"):
        load_image_vae(tmp_path / "vae.pt")
    _, state = comfy_image_vae(comfy_code)
    video = dict(state, **{"decoder.up.0.block.0.time_stack.in_layers.0.weight": torch.zeros(1)})
    save_file(video, str(tmp_path / "svd_vae.safetensors"))
    with pytest.raises(ValueError, match="holds SVD's video VAE; Stable Virtual Camera works in SD 2.x's image VAE"):
        load_image_vae(tmp_path / "svd_vae.safetensors")
    save_file({"text_model.embeddings.token_embedding.weight": torch.zeros(2, 2)}, str(tmp_path / "clip.safetensors"))
    with pytest.raises(ValueError, match="is not an image VAE: it looks like a text encoder"):
        load_image_vae(tmp_path / "clip.safetensors")


def test_the_image_encoder_loads_from_clip_vision_files_and_from_svd(tmp_path):
    """The same tiny ViT saved as ComfyUI's models/clip_vision files have it (transformers names, OpenCLIP
    names) and inside an SVD single file: each loads to the same embeddings as the original."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from conftest import to_openclip
    from recapture.multiview import load_image_encoder
    from recapture.svd import CLIP_PREFIX, image_encoder_config

    torch.manual_seed(0)
    original = CLIPVisionModelWithProjection(CLIPVisionConfig(**image_encoder_config(
        width=32, patch=8, positions=16, projection=32, intermediate=64, layers=2))).eval()
    hf = {k: v.contiguous() for k, v in original.state_dict().items()}
    files = {"clip_vision_hf.safetensors": hf,
             "clip_vision_openclip.safetensors": {"visual." + k: v for k, v in to_openclip(hf).items()}
             | {"token_embedding.weight": torch.zeros(2, 2)},  # a text tower too: ignored
             "svd_xt.safetensors": {CLIP_PREFIX + k: v for k, v in to_openclip(hf).items()}
             | {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}}
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = original(pixel_values=pixels).image_embeds
    for name, state in files.items():
        save_file(state, str(tmp_path / name))
        with torch.no_grad():
            got = load_image_encoder(tmp_path / name)(pixel_values=pixels).image_embeds
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5, msg=name)
    save_file({"encoder.conv_in.weight": torch.zeros(1), "decoder.conv_out.weight": torch.zeros(1)},
              str(tmp_path / "vae.safetensors"))
    with pytest.raises(ValueError, match="holds no CLIP image encoder: it looks like a VAE on its own"):
        load_image_encoder(tmp_path / "vae.safetensors")
    damaged = dict(hf)
    del damaged["vision_model.encoder.layers.1.mlp.fc2.bias"]
    save_file(damaged, str(tmp_path / "damaged.safetensors"))
    with pytest.raises(ValueError, match="does not fit a CLIP ViT image encoder"):
        load_image_encoder(tmp_path / "damaged.safetensors")
