"""Loading Stable Virtual Camera's single file: the weights come back bit for bit, and wrong files are
named (SVD, pickles, damaged)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from recapture.seva import SevaUNet, load_seva_unet, tiny_seva_config
from recapture.svd import describe_checkpoint


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    torch.manual_seed(0)
    model = SevaUNet(tiny_seva_config())
    path = tmp_path_factory.mktemp("seva") / "modelv1.1.safetensors"
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model


def test_the_file_loads_bit_for_bit_in_its_dtype_or_another(tiny_file):
    path, model = tiny_file
    loaded = load_seva_unet(path, config=tiny_seva_config())
    state = loaded.state_dict()
    assert state.keys() == model.state_dict().keys()
    assert all(v.dtype == torch.bfloat16 for v in state.values())  # the file's dtype
    assert all(torch.equal(state[k], v.to(torch.bfloat16)) for k, v in model.state_dict().items())
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    as_float = load_seva_unet(path, torch.float32, config=tiny_seva_config())
    assert all(v.dtype == torch.float32 for v in as_float.state_dict().values())


def test_wrong_files_are_named(tiny_file, tmp_path):
    path, model = tiny_file
    with pytest.raises(ValueError, match=r"only safetensors weights are loaded, never pickled \.ckpt"):
        load_seva_unet(tmp_path / "model.ckpt")
    with pytest.raises(FileNotFoundError, match="goes in models/checkpoints or models/diffusion_models"):
        load_seva_unet(tmp_path / "absent.safetensors")
    svd = tmp_path / "svd_xt.safetensors"
    save_file({"model.diffusion_model.input_blocks.1.0.time_stack.in_layers.0.weight": torch.zeros(1),
               "model.diffusion_model.output_blocks.2.0.time_mixer.mix_factor": torch.zeros(1),
               "first_stage_model.decoder.up.0.block.0.time_stack.in_layers.0.weight": torch.zeros(1),
               "conditioner.embedders.0.open_clip.model.visual.proj": torch.zeros(1)}, str(svd))
    with pytest.raises(ValueError, match=r"it looks like an SVD checkpoint \(load it with ReCapture Load SVD\)"):
        load_seva_unet(svd, config=tiny_seva_config())
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    del state["out.2.bias"]
    cut = tmp_path / "cut.safetensors"
    save_file(state, str(cut))
    with pytest.raises(ValueError, match=r"does not fit Stable Virtual Camera v1.1 \(1 weights missing, 0 of another "
                                         r"shape, e.g. out.2.bias\)"):
        load_seva_unet(cut, config=tiny_seva_config())
    # and the SVD loader names this file for what it is
    assert describe_checkpoint(list(model.state_dict())) == ("a Stable Virtual Camera checkpoint (the multi-view "
                                                             "anchor's model, not SVD)")
