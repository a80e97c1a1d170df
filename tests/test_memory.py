"""Which models sit on the device when: the offloading of training and sampling, checked on the CPU.

On the CPU a move is a no-op, so the tests record the moves each model is asked to make and when.
"""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_svd_models
from recapture.config import MEMORY_PLANS, SampleConfig, TrainConfig
from recapture.sampling import sample_video
from recapture.train import train_recapture_lora

H = W = 32


@pytest.fixture
def models(monkeypatch):
    """Tiny SVD models whose ``.to`` calls are logged as (model, device) in ``models.moves``."""
    models = tiny_svd_models()
    moves: list[tuple[str, str]] = []
    for name in ("unet", "vae", "image_encoder"):
        module = getattr(models, name)

        def spy(*args, _name=name, _to=module.to, **kwargs):
            moves.append((_name, str(args[0] if args else kwargs.get("device"))))
            return _to(*args, **kwargs)

        monkeypatch.setattr(module, "to", spy)
    models.moves = moves
    return models


def where(moves: list[tuple[str, str]], name: str) -> str:
    """Where the model was last asked to go ("home" if never moved)."""
    return next((device for model, device in reversed(moves) if model == name), "home")


def clip():
    t = torch.linspace(0, 1, 4)[:, None, None, None]
    return (torch.rand(1, H, W, 3, generator=torch.Generator().manual_seed(0)) + t) % 1.0


def test_training_keeps_clip_and_vae_off_the_device_while_it_steps(models):
    frames = clip()
    seen = []
    train_recapture_lora(models, frames, torch.ones(4, H, W), frames, TrainConfig(steps=2, rank=4),
                         on_step=lambda *_: seen.append((where(models.moves, "vae"),
                                                         where(models.moves, "image_encoder"))))
    assert seen == [("cpu", "cpu")] * 2
    # and both go back where they were (the CPU here) when training ends
    assert models.moves[-2:] == [("vae", "cpu"), ("image_encoder", "cpu")]
    assert where(models.moves, "unet") == "home"

    models.moves.clear()
    train_recapture_lora(models, frames, torch.ones(4, H, W), frames,
                         TrainConfig(steps=1, rank=4, memory="fast"))
    assert models.moves == []  # the fast plan leaves every model where it is


@pytest.mark.parametrize("memory", ["fast", "balanced", "low"])
def test_sampling_moves_each_model_off_while_the_others_work(models, memory):
    frames = clip()
    during_steps = []
    decoded_with = []
    original_decode = models.vae.decode

    def decode(*args, **kwargs):
        decoded_with.append((where(models.moves, "unet"), where(models.moves, "image_encoder")))
        return original_decode(*args, **kwargs)

    models.vae.decode = decode
    out = sample_video(models, None, frames[0], 4, SampleConfig(steps=2, memory=memory),
                       on_step=lambda *_: during_steps.append((where(models.moves, "vae"),
                                                              where(models.moves, "image_encoder"))))
    assert out.shape == (4, H, W, 3)
    if memory == "fast":  # every model stays on the device
        assert models.moves == [] and len(decoded_with) == 1 and len(during_steps) == 2
        return
    assert during_steps == [("cpu", "cpu")] * 2
    # CLIP's work ends with the prompt: it stays off while the VAE decodes, and so does the UNet in "low"
    low = memory == "low"
    assert set(decoded_with) == ({("cpu", "cpu")} if low else {("home", "cpu")})
    assert [m for m in models.moves if m[0] == "image_encoder"] == [("image_encoder", "cpu")] * 2  # off, back
    assert ("unet", "cpu") in models.moves if low else where(models.moves, "unet") == "home"


def test_low_memory_sampling_runs_the_guidance_branches_in_turn_with_the_same_result():
    """The low plan batches one CFG branch at a time, runs the feed-forwards over slices of tokens (and
    parks the UNet while the VAE works): the frames it samples and refines are the default plan's. (A
    smaller decode_chunk_size does change them: SVD's VAE decoder mixes the frames of a chunk.)"""
    from dataclasses import replace

    from diffusers.models.attention import FeedForward

    from recapture.sampling import sdedit

    low = replace(MEMORY_PLANS["low"], feed_forward_tokens=7)  # slices the tiny model's few tokens too
    models = tiny_svd_models()
    batches, widest = [], []
    models.unet.register_forward_pre_hook(lambda _m, args: batches.append(args[0].shape[0]))
    for ff in (m for m in models.unet.modules() if isinstance(m, FeedForward)):
        ff.net[0].register_forward_pre_hook(lambda _m, a: widest.append(a[0].reshape(-1, a[0].shape[-1]).shape[0]))
    frames = clip()
    out, refined = {}, {}
    for low_memory in (False, True):
        batches.clear(), widest.clear()
        config = SampleConfig(steps=3, memory=low if low_memory else "balanced", decode_chunk_size=2,
                              refine_strength=0.7)
        out[low_memory] = sample_video(models, None, frames[0], 4, config)
        refined[low_memory] = sdedit(models, None, frames, config)
        assert set(batches) == ({1} if low_memory else {2})
        assert (max(widest) == 7) == low_memory
    assert all("forward" not in vars(m) for m in models.unet.modules())
    torch.testing.assert_close(out[True], out[False], rtol=0, atol=1e-5)
    torch.testing.assert_close(refined[True], refined[False], rtol=0, atol=1e-5)
    assert (out[False] - frames).abs().mean() > 0.05  # it did sample something


def test_block_checkpointing_keeps_the_gradients_and_recomputes_every_block():
    """Checkpointing every residual and whole spatio-temporal transformer block (and in the low plan
    also each feed-forward inside) changes nothing but what is stored: the trained LoRAs match training
    without it, each block runs once more per backward (a feed-forward twice more), and the blocks get
    their own forward back afterwards."""
    from diffusers.models.attention import FeedForward
    from diffusers.models.resnet import SpatioTemporalResBlock
    from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel

    anchor, mask = clip(), torch.ones(4, H, W)
    settings = {"none": dict(memory="fast"), "blocks": dict(memory="balanced"), "low": dict(memory="low")}
    trained, calls = {}, {}
    for name, setting in settings.items():
        models = tiny_svd_models()
        blocks = {n: m for n, m in models.unet.named_modules()
                  if isinstance(m, (SpatioTemporalResBlock, TransformerSpatioTemporalModel, FeedForward))}
        counts = dict.fromkeys(blocks, 0)
        for n, block in blocks.items():  # a recomputation calls forward, not the block: count its first layer
            first = block.net[0] if isinstance(block, FeedForward) else next(block.children())
            first.register_forward_pre_hook(lambda _m, _a, n=n: counts.__setitem__(n, counts[n] + 1))
        trained[name] = train_recapture_lora(models, anchor, mask, anchor,
                                             TrainConfig(steps=2, spatial_frames=2, **setting))
        calls[name] = counts
        assert all("forward" not in vars(b) for b in blocks.values())
    feed_forwards = {n for n, m in blocks.items() if isinstance(m, FeedForward)}
    assert len(blocks) > 10 and len(feed_forwards) >= 6
    # 2 steps x (temporal + spatial pass) = 4 forwards per block; checkpointing re-runs each in backward,
    # except the first residual block: its input needs no gradient, so it keeps nothing to recompute
    assert set(calls["none"].values()) == {4}
    assert calls["blocks"] == {n: 4 if n == "down_blocks.0.resnets.0" else 8 for n in blocks}
    # the low plan re-runs a feed-forward once more where its input needs a gradient (12); the first
    # ones of the net, ahead of every LoRA trained in that pass, only in the other pass (10)
    assert {n: c for n, c in calls["low"].items() if n not in feed_forwards} == \
        {n: c for n, c in calls["blocks"].items() if n not in feed_forwards}
    assert {calls["low"][n] for n in feed_forwards} == {10, 12}
    assert all(calls["low"][n] > calls["blocks"][n] for n in feed_forwards)
    for name in ("blocks", "low"):
        for adapter in ("temporal", "spatial"):
            plain, checkpointed = getattr(trained["none"], adapter), getattr(trained[name], adapter)
            assert plain.keys() == checkpointed.keys()
            for key in plain:
                torch.testing.assert_close(checkpointed[key], plain[key], rtol=1e-5, atol=1e-6)


def test_low_memory_recomputes_feed_forwards_in_slices_of_tokens_with_the_same_gradients():
    """In the low plan a feed-forward runs in checkpointed slices of tokens (its backward then holds one
    slice's wide activations): the UNet's gradients are those without checkpointing. (Compared before
    any optimizer step: Adam would magnify the slices' different rounding of near-zero gradients.)"""
    from diffusers.models.attention import FeedForward

    from recapture.checkpointing import checkpointed_blocks

    unet = tiny_svd_models().unet
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, unet.config.in_channels, H // 8 * 2, W // 8 * 2, generator=g)
    context = torch.randn(1, 1, unet.config.cross_attention_dim, generator=g)
    time_ids = torch.tensor([[6.0, 127.0, 0.02]])

    def gradient():
        x = sample.clone().requires_grad_(True)
        out = unet(x, torch.tensor([0.5]), encoder_hidden_states=context, added_time_ids=time_ids).sample
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return x.grad

    plain = gradient()
    widest = []
    for ff in (m for m in unet.modules() if isinstance(m, FeedForward)):
        ff.net[0].register_forward_pre_hook(lambda _m, a: widest.append(a[0].reshape(-1, a[0].shape[-1]).shape[0]))
    with checkpointed_blocks(unet, keep_outputs_from_flops=None, feed_forward_tokens=7):
        sliced = gradient()
    assert max(widest) == 7 and len(widest) > 20 and plain.abs().max() > 1e-3
    torch.testing.assert_close(sliced, plain, rtol=1e-4, atol=1e-6)


def test_costly_outputs_are_kept_instead_of_computed_again():
    """Checkpointing that keeps the outputs of attention, convolutions and matrix products (the ones
    whose recomputation costs at least the threshold per element) trains the same LoRAs and runs none
    of those twice; with a threshold above every operation, all of them run again in backward."""
    from dataclasses import replace

    from torch.utils._python_dispatch import TorchDispatchMode

    from recapture.checkpointing import recompute_flops_per_element

    class CostlyCalls(TorchDispatchMode):
        """Counts the operations the threshold looks at, by kind."""

        def __init__(self):
            super().__init__()
            self.count: dict[str, int] = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if recompute_flops_per_element(func, args):
                kind = "attention" if "attention" in str(func) else str(func)
                self.count[kind] = self.count.get(kind, 0) + 1
            return func(*args, **(kwargs or {}))

    anchor, mask = clip(), torch.ones(4, H, W)
    trained, calls = {}, {}
    plans = {"none": "fast", "recomputed": replace(MEMORY_PLANS["balanced"], keep_outputs_from_flops=None),
             "kept": replace(MEMORY_PLANS["balanced"], keep_outputs_from_flops=1)}
    for name, plan in plans.items():
        with CostlyCalls() as counter:
            trained[name] = train_recapture_lora(tiny_svd_models(), anchor, mask, anchor,
                                                 TrainConfig(steps=2, spatial_frames=2, memory=plan))
        calls[name] = counter.count
    assert {"attention", "aten.convolution.default"} <= calls["none"].keys(), calls["none"]
    assert calls["kept"] == calls["none"]
    assert all(calls["recomputed"][kind] > count for kind, count in calls["none"].items())
    for adapter in ("temporal", "spatial"):
        plain, kept = getattr(trained["none"], adapter), getattr(trained["kept"], adapter)
        for key in plain:
            torch.testing.assert_close(kept[key], plain[key], rtol=1e-5, atol=1e-6)


def test_recompute_cost_per_element_of_svds_operations():
    from recapture.checkpointing import _attention_kernels, recompute_flops_per_element

    KEEP_OUTPUTS_FROM_FLOPS = MEMORY_PLANS["balanced"].keep_outputs_from_flops  # noqa: N806
    aten = torch.ops.aten
    q = torch.empty(1, 5, 9216, 64, device="meta")
    assert _attention_kernels()
    for kernel in _attention_kernels():
        assert recompute_flops_per_element(kernel, (q, q, q)) == 4 * 9216
    conv = lambda c_in, kernel: (None, torch.empty(320, c_in, *kernel, device="meta"), None, 1, 0, 1, False)
    assert recompute_flops_per_element(aten.convolution.default, conv(640, (3, 3))) == 2 * 640 * 9
    assert recompute_flops_per_element(aten.convolution.default, conv(320, (3, 3))) < KEEP_OUTPUTS_FROM_FLOPS
    assert recompute_flops_per_element(aten.convolution.default, conv(640, (3, 3))) >= KEEP_OUTPUTS_FROM_FLOPS
    assert recompute_flops_per_element(aten.mm.default, (torch.empty(10, 5120, device="meta"), None)) == 10240
    assert recompute_flops_per_element(aten.addmm.default, (None, torch.empty(10, 1280, device="meta"), None)) == 2560
    assert recompute_flops_per_element(aten.add.Tensor, (q, q)) == 0


def test_lora_on_a_half_precision_base_runs_in_its_dtype_with_float32_weights():
    """On a bf16 UNet the LoRA path makes no float32 copy of its input (peft's default, which kept
    ~0.9 GiB alive at full size) while its weights and their gradients stay float32; the result
    matches the float32 computation to bf16 precision."""
    from recapture.lora import inject_lora_adapters, lora_layers

    models = tiny_svd_models()
    unet = models.unet.to(torch.bfloat16)
    inject_lora_adapters(unet, rank=4)
    layer = next(m for m in lora_layers(unet) if "temporal" in m.lora_A)
    for adapter in layer.lora_B:  # peft starts B at zero: give the update a size
        torch.nn.init.normal_(layer.lora_B[adapter].weight, std=0.5)
    a, b = layer.lora_A["temporal"], layer.lora_B["temporal"]
    a.weight.requires_grad_(True)
    x = torch.randn(3, 5, a.in_features, dtype=torch.bfloat16, requires_grad=True)
    seen = []
    a.register_forward_pre_hook(lambda _m, args: seen.append(args[0].dtype))
    out = layer(x)
    assert out.dtype == torch.bfloat16 and seen == [torch.bfloat16]
    out.float().sum().backward()
    assert a.weight.dtype == a.weight.grad.dtype == torch.float32
    base = torch.nn.functional.linear(x.float(), layer.base_layer.weight.float(),
                                      None if layer.base_layer.bias is None else layer.base_layer.bias.float())
    update = sum(layer.lora_B[n].weight @ layer.lora_A[n].weight * layer.scaling[n] for n in layer.lora_A)
    torch.testing.assert_close(out.float(), base + x.float() @ update.T, rtol=0.05, atol=0.05)


def test_lora_on_a_float16_base_keeps_computing_in_float32():
    """float16's range could flush small LoRA weight gradients to zero: there the LoRA path stays
    float32, as peft has it; bf16 (float32's range) computes in bf16."""
    from recapture.lora import _linear_in_input_dtype

    linear = torch.nn.Linear(8, 4, bias=False)
    for dtype, expected in ((torch.float16, torch.float32), (torch.bfloat16, torch.bfloat16),
                            (torch.float32, torch.float32)):
        x = torch.randn(2, 8).to(dtype)
        out = _linear_in_input_dtype(linear, x)
        assert out.dtype == expected, dtype
        torch.testing.assert_close(out.float(), x.float() @ linear.weight.T, rtol=0.02, atol=0.02)
