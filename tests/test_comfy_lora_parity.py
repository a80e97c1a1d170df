"""Exported LoRAs against core ComfyUI's own SVD UNet and LoRA loader (the dev ComfyUI's code, imported
without a server: ``comfy_code``). The base UNets' parity alone: tests/test_svd_loading.py."""

from __future__ import annotations

import copy
import logging
import types

import pytest
import torch

from conftest import TINY_COMFY_UNET, tiny_svd_models
from recapture.lora import (adapter_parameters, adapter_state, inject_lora_adapters, load_lora_file, lora_layers,
                            save_lora_file)
from recapture.svd import unet_diffusers_to_sgm, unet_layout


@pytest.fixture(scope="module")
def twins(comfy_code):
    """Our tiny diffusers UNet and ComfyUI's UNet holding the same weights (mapped to SGM names)."""
    ours = tiny_svd_models().unet
    theirs = comfy_code.tiny_unet()
    layout = unet_layout(ours)
    theirs.load_state_dict({unet_diffusers_to_sgm(k, **layout): v for k, v in ours.state_dict().items()}, strict=True)
    return ours, theirs.eval()


def run_both(comfy_code, ours, theirs, seed=0):
    """The same denoiser call in diffusers' and ComfyUI's conventions; outputs as (B*F, 4, h, w)."""
    g = torch.Generator().manual_seed(seed)
    b, f = 1, 4
    x = torch.randn(b, f, 8, 4, 4, generator=g)
    emb = torch.randn(b, 1, 32, generator=g)
    ids = torch.tensor([[5.0, 127.0, 0.02]])
    c_noise = torch.tensor([0.25 * torch.log(torch.tensor(2.0))])
    with torch.no_grad():
        a = ours(x, c_noise, encoder_hidden_states=emb, added_time_ids=ids).sample.reshape(b * f, 4, 4, 4)
        # ComfyUI embeds each added time id with its Timestep embedder and flattens them (SVD's encode_adm)
        y = torch.flatten(torch.cat([comfy_code.Timestep(8)(ids[0, i : i + 1]) for i in range(3)]))[None]
        c = theirs(x.reshape(b * f, 8, 4, 4), c_noise.repeat(f), context=emb.repeat_interleave(f, 0),
                   y=y.repeat(f, 1), num_video_frames=f)
    return a, c


def relative_error(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.comfy_code
def test_exported_loras_load_in_core_comfyui_with_parity(comfy_code, twins, tmp_path, caplog):
    ours, theirs = twins
    ours = copy.deepcopy(ours)
    inject_lora_adapters(ours, rank=4, alpha=2.0)
    torch.manual_seed(3)
    for adapter in ("temporal", "spatial"):
        for p in adapter_parameters(ours, adapter):
            torch.nn.init.normal_(p, std=0.05)  # B is zero after injection: give both a visible effect
    files = [save_lora_file(tmp_path / f"{a}.safetensors", adapter_state(ours, a, 2.0), a, rank=4, alpha=2.0)
             for a in ("temporal", "spatial")]

    # core ComfyUI's LoraLoaderModelOnly path: load_lora_for_models on a ModelPatcher, then patch
    model = torch.nn.Module()
    model.diffusion_model = copy.deepcopy(theirs)
    model.model_config = types.SimpleNamespace(unet_config=dict(TINY_COMFY_UNET, num_res_blocks=[1, 1]))
    patcher = comfy_code.patcher.ModelPatcher(model, load_device=torch.device("cpu"),
                                              offload_device=torch.device("cpu"))
    caplog.set_level(logging.WARNING)
    for file in files:
        state, metadata = load_lora_file(file)
        assert metadata["recapture.adapter"] in ("temporal", "spatial") and metadata["recapture.rank"] == "4"
        patcher, _ = comfy_code.sd.load_lora_for_models(patcher, None, state, 1.0, 0)
    assert "not loaded" not in caplog.text
    patcher.patch_model()
    assert len(patcher.patches) == len(lora_layers(ours)) == 24 + 16  # every adapted layer: 4 temporal blocks x 6, spatial
    a, c = run_both(comfy_code, ours, patcher.model.diffusion_model)
    base, _ = run_both(comfy_code, *twins)
    assert relative_error(a, base) > 1e-2  # the LoRAs change the output...
    assert relative_error(a, c) < 1e-5  # ...and ComfyUI applies them exactly as we do (the base UNets too, then)


def test_lora_files_round_trip_and_refuse_what_is_not_ours(tmp_path):
    from safetensors.torch import save_file

    state = {"diffusion_model.input_blocks.1.1.time_stack.0.attn1.to_q.lora_A.weight": torch.randn(4, 32),
             "diffusion_model.input_blocks.1.1.time_stack.0.attn1.to_q.lora_B.weight": torch.randn(32, 4),
             "diffusion_model.input_blocks.1.1.time_stack.0.attn1.to_q.alpha": torch.tensor(4.0)}
    file = save_lora_file(tmp_path / "t.safetensors", state, "temporal", rank=4, alpha=4.0, settings={"steps": 3})
    back, metadata = load_lora_file(file)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    assert metadata["recapture.settings"] == '{"steps": 3}'
    sdxl = tmp_path / "sdxl_lora.safetensors"
    save_file({"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.zeros(4, 8)},
              str(sdxl))
    with pytest.raises(ValueError, match="not a LoRA for Stable Video Diffusion"):
        load_lora_file(sdxl)
    (tmp_path / "x.ckpt").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="only .safetensors"):
        load_lora_file(tmp_path / "x.ckpt")
