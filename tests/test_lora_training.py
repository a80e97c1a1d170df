"""Stage 2a on tiny random-init models of SVD's real classes: adapters, image-only mode, masked training."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import tiny_svd_models
from recapture.config import TrainConfig
from recapture.lora import (TARGETS, adapter_parameters, image_only_mode, inject_lora_adapters, lora_layers,
                            remove_lora_adapters, set_lora_strengths)
from recapture.loss_plot import loss_curve_image
from recapture.svd_conditioning import edm_loss, latent_mask
from recapture.train import train_recapture_lora

H = W = 32


@pytest.fixture(scope="module")
def models():
    return tiny_svd_models()


@pytest.fixture(scope="module")
def clip():
    """A small moving pattern: 4 frames, and a mask whose right third is a hole."""
    torch.manual_seed(1)
    y, x = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    frames = torch.stack([torch.stack([(torch.sin(6 * x + t) + 1) / 2, (torch.cos(5 * y - t) + 1) / 2,
                                       0.5 + 0.0 * x], dim=-1) for t in torch.linspace(0, 1, 4)])
    mask = torch.ones(4, H, W)
    mask[:, :, 20:] = 0
    return frames, mask


def unet_out(unet, x, emb, sigma=1.0):
    time_ids = torch.tensor([[6.0, 127.0, 0.02]] * x.shape[0])
    return unet(x, torch.full((x.shape[0],), 0.25 * torch.log(torch.tensor(sigma))), encoder_hidden_states=emb,
                added_time_ids=time_ids).sample


def test_adapters_sit_only_on_their_modules(models):
    unet = copy.deepcopy(models.unet)
    inject_lora_adapters(unet, rank=4)
    names = {name: set(layer.lora_A) for name, layer in unet.named_modules() if hasattr(layer, "lora_A")}
    assert names
    for name, adapters in names.items():
        assert adapters == ({"temporal"} if "temporal_transformer_blocks" in name else {"spatial"}), name
        assert name.endswith(("to_q", "to_k", "to_v", "to_out.0"))
        assert "temporal" in adapters or ".attn1." in name  # spatial: self-attention only
    assert not any(p.requires_grad for p in unet.parameters())  # nothing trains until asked
    remove_lora_adapters(unet)
    assert not lora_layers(unet) and not hasattr(unet, "peft_config")
    assert unet.state_dict().keys() == models.unet.state_dict().keys()


def test_full_size_svd_gets_96_temporal_and_64_spatial_lora_layers():
    """The temporal cross-attention attends to one CLIP token (softmax 1): its to_q/to_k get no adapter."""
    from diffusers import UNetSpatioTemporalConditionModel

    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel()  # SVD-XT's architecture (the class defaults)
        inject_lora_adapters(unet, rank=16)
    layers = {n: set(m.lora_A) for n, m in unet.named_modules() if hasattr(m, "lora_A")}
    assert sum(a == {"temporal"} for a in layers.values()) == 96
    assert sum(a == {"spatial"} for a in layers.values()) == 64
    assert not [n for n in layers if ".attn2.to_q" in n or ".attn2.to_k" in n]
    assert sum(p.numel() for p in adapter_parameters(unet, "temporal")) == 2_458_624
    assert sum(p.numel() for p in adapter_parameters(unet, "spatial")) == 1_597_440


def test_the_temporal_cross_attention_query_and_key_could_not_learn(models):
    """Why they are left out: adapted, their gradients are rounding noise; to_v's are not."""
    import peft

    unet = copy.deepcopy(models.unet)
    config = peft.LoraConfig(r=4, target_modules=r".*temporal_transformer_blocks\.\d+\.attn2\.(to_q|to_k|to_v)")
    peft.inject_adapter_in_model(config, unet, adapter_name="probe")
    probe = {n: p for n, p in unet.named_parameters() if ".probe." in n}
    for p in probe.values():
        torch.nn.init.normal_(p, std=0.02)
    x0 = torch.randn(1, 4, 4, H // 8, W // 8)
    edm_loss(unet, x0, torch.tensor([1.0]), torch.randn_like(x0), torch.randn_like(x0), torch.randn(1, 1, 32),
             torch.tensor([[6.0, 127.0, 0.02]])).backward()
    largest = {kind: max(p.grad.abs().max().item() for n, p in probe.items() if f".{kind}." in n)
               for kind in ("to_q", "to_k", "to_v")}
    assert largest["to_q"] < 1e-9 and largest["to_k"] < 1e-9 and largest["to_v"] > 1e-6, largest


def test_files_with_the_temporal_cross_attention_query_and_key_still_load(models, tmp_path):
    from recapture.lora import load_lora_pair, save_lora_file, UNLEARNABLE_KEYS

    key = "diffusion_model.input_blocks.1.1.time_stack.0.attn2.to_q"
    spatial = {"diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 32),
               "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 4)}
    temporal = {f"{key}.lora_A.weight": torch.ones(4, 32), f"{key}.lora_B.weight": torch.ones(32, 4),
                key.replace("attn2.to_q", "attn1.to_q") + ".lora_A.weight": torch.zeros(4, 32),
                key.replace("attn2.to_q", "attn1.to_q") + ".lora_B.weight": torch.zeros(32, 4)}
    save_lora_file(tmp_path / "old_temporal.safetensors", temporal, "temporal", 4, 4.0)
    save_lora_file(tmp_path / "old_spatial.safetensors", spatial, "spatial", 4, 4.0)
    lora = load_lora_pair(tmp_path / "old_temporal.safetensors", tmp_path / "old_spatial.safetensors")
    assert not [k for k in lora.temporal if UNLEARNABLE_KEYS.match(k)] and len(lora.temporal) == 2


def test_image_only_mode_isolates_frames(models):
    unet = models.unet
    torch.manual_seed(0)
    x = torch.randn(1, 4, 8, H // 8, W // 8)
    emb = torch.randn(1, 1, 32)
    changed = x.clone()
    changed[:, 2] += 1.0
    with torch.no_grad(), image_only_mode(unet):
        a, b = unet_out(unet, x, emb), unet_out(unet, changed, emb)
    assert torch.equal(a[:, [0, 1, 3]], b[:, [0, 1, 3]]) and not torch.equal(a[:, 2], b[:, 2])
    with torch.no_grad():  # with the temporal layers on, frames do influence each other
        a, b = unet_out(unet, x, emb), unet_out(unet, changed, emb)
    assert not torch.allclose(a[:, 0], b[:, 0])


def test_gradients_reach_only_the_adapter_being_trained(models):
    unet = copy.deepcopy(models.unet)
    inject_lora_adapters(unet, rank=4)
    temporal, spatial = adapter_parameters(unet, "temporal"), adapter_parameters(unet, "spatial")
    for p in temporal:
        torch.nn.init.normal_(p, std=0.02)  # B starts at zero, which would also zero A's gradient
    for p in spatial:
        torch.nn.init.normal_(p, std=0.02)
    x0 = torch.randn(1, 4, 4, H // 8, W // 8)
    args = (torch.tensor([1.0]), torch.randn_like(x0), torch.randn_like(x0), torch.randn(1, 1, 32),
            torch.tensor([[6.0, 127.0, 0.02]]))
    for p in temporal:
        p.requires_grad_(True)
    edm_loss(unet, x0, *args).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in temporal)
    assert all(p.grad is None for p in spatial)
    assert all(p.grad is None for n, p in unet.named_parameters() if ".lora_" not in n)
    for p in temporal:
        p.requires_grad_(False)
        p.grad = None
    for p in spatial:
        p.requires_grad_(True)
    set_lora_strengths(unet, temporal=0.0, spatial=1.0)
    with image_only_mode(unet):
        edm_loss(unet, x0, *args).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in spatial)
    assert all(p.grad is None for p in temporal)


def test_latent_mask_is_a_conservative_min_pool():
    mask = torch.ones(1, 32, 32)
    mask[0, 5, 5] = 0  # one invalid pixel spoils its whole 8x8 cell
    lm = latent_mask(mask)
    assert lm.shape == (1, 1, 4, 4) and lm[0, 0, 0, 0] == 0 and lm.sum() == 15
    assert latent_mask(mask, erosion=1).sum() == 12  # and its neighbours with erosion


def test_hole_content_changes_neither_loss_nor_lora(models, clip):
    frames, mask = clip
    other = frames.clone()
    other[..., 20:, :] = torch.rand_like(other[..., 20:, :])  # different pixels only where mask == 0
    other[:, :, 20:] = 1.0
    valid_changed = frames.clone()
    valid_changed[:, 4:12, 4:12] = 1.0 - valid_changed[:, 4:12, 4:12]  # control: change valid pixels
    config = TrainConfig(steps=3, rank=4, spatial_frames=2, memory="fast")
    a = train_recapture_lora(models, frames, mask, frames, config)
    b = train_recapture_lora(models, other, mask, frames, config)
    c = train_recapture_lora(models, valid_changed, mask, frames, config)

    def distance(x, y):
        return max((x.temporal[k] - y.temporal[k]).abs().max().item() for k in x.temporal)

    # the forward pass is deterministic: the first loss is bitwise equal; CPU backward sums in
    # thread order, so later steps may differ by ~1e-5 even for identical inputs
    assert a.losses[0] == b.losses[0] and a.losses[0] != c.losses[0]
    assert distance(a, b) < 1e-4
    assert distance(a, c) > 100 * distance(a, b)


def test_loss_curve_image():
    """The Train node's loss picture: the right size and colours in 0..1, also before any step.
    (That training lowers the loss: tests/test_method.py.)"""
    losses = [(1.0 / (step + 1), 0.5 + 0.1 * (step % 3)) for step in range(40)]
    image = loss_curve_image(losses)
    assert image.shape == (256, 512, 3) and 0 <= image.min() and image.max() <= 1 and image.std() > 0
    assert loss_curve_image([], width=64, height=32).shape == (32, 64, 3)


def test_cancel_leaves_the_model_untouched(models, clip):
    frames, mask = clip
    before = {k: v.clone() for k, v in models.unet.state_dict().items()}

    def cancel(step, *_):
        if step == 1:
            raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        train_recapture_lora(models, frames, mask, frames, TrainConfig(steps=5, rank=4, memory="low"),
                             on_step=cancel)
    assert not lora_layers(models.unet)
    assert not any("forward" in vars(m) for m in models.unet.modules())  # checkpointing taken off again
    after = models.unet.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert not any(p.requires_grad for p in models.unet.parameters())


@pytest.mark.parametrize("change, message", [
    (dict(mask=torch.zeros(4, H, W)), "no valid latent"),
    (dict(mask=torch.ones(3, H, W)), "its mask is"),
    (dict(source=torch.rand(4, 16, 16, 3)), "load both at the same size"),
    (dict(anchor=torch.full((4, H, W, 3), float("nan"))), "NaN"),
    (dict(config=TrainConfig(steps=0)), "steps must be at least 1"),
    (dict(config=TrainConfig(learning_rate=5.0)), "learning rate"),
    (dict(config=TrainConfig(rank=1000)), "rank must be between 1 and 256"),
])
def test_bad_training_input_is_named(models, clip, change, message):
    frames, mask = clip
    kwargs = dict(anchor=frames, mask=mask, source=frames, config=TrainConfig(steps=1, rank=4)) | change
    with pytest.raises(ValueError, match=message):
        train_recapture_lora(models, kwargs["anchor"], kwargs["mask"], kwargs["source"], kwargs["config"])
    assert not lora_layers(models.unet)


def test_a_saved_pair_carries_the_settings_it_was_trained_with(models, clip, tmp_path):
    """SVD's conditioning must be the same at sampling time: the files' metadata bring it back."""
    from recapture.config import Conditioning, TrainConfig
    from recapture.lora import load_lora_pair, save_lora_pair

    frames, mask = clip
    config = TrainConfig(steps=1, rank=4, fps=9, motion_bucket_id=60, noise_aug_strength=0.05, memory="fast")
    lora = train_recapture_lora(models, frames, mask, frames, config)
    assert lora.conditioning == Conditioning(9, 60, 0.05)
    files = save_lora_pair(tmp_path, "pair", lora, {"model": "tiny"})
    assert [f.name for f in files] == ["pair_temporal.safetensors", "pair_spatial.safetensors"]
    loaded = load_lora_pair(*files)
    assert loaded.conditioning == Conditioning(9, 60, 0.05)
    assert loaded.config["model"] == "tiny" and loaded.config["memory"] == "fast" and loaded.rank == 4
    assert all(torch.equal(loaded.temporal[k], lora.temporal[k]) for k in lora.temporal)
    with pytest.raises(ValueError, match="pair_spatial.safetensors is a spatial LoRA, not a temporal one: swap"):
        load_lora_pair(files[1], files[0])
