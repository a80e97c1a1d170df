"""Loading SVD (recapture.svd) against ComfyUI's own code (the ``comfy_code`` reference, no server): a
tiny single-file checkpoint written from ComfyUI's UNet, VAE and CLIP vision modules gives the same
outputs through our diffusers/transformers modules; a single file's architecture is read off its tensor
shapes; the full-size key mapping, configs and parameter counts are proven on the meta device; diffusers
folders round-trip; files that are not SVD are refused with a message that says what they are.

Tests marked ``comfy_code`` import ComfyUI's modules; the others need only the library."""

from __future__ import annotations

import copy
import inspect
import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from conftest import tiny_svd_models, to_openclip
from recapture.svd import (CLIP_PREFIX, IMAGE_ENCODER_CONFIG, SCHEDULER_CONFIG, UNET_CONFIG, UNET_PREFIX, VAE_CONFIG,
                           VAE_PREFIX, build_svd, configs_from_checkpoint, describe_checkpoint, is_svd_checkpoint,
                           load_svd, openclip_to_clip_vision, save_svd_folder, svd_configs, tiny_svd_configs,
                           unet_diffusers_to_sgm, unet_diffusers_to_sgm_module_path, unet_sgm_to_diffusers,
                           unet_sgm_to_diffusers_module_path, vae_state_from_sgm)

comfy_code_test = pytest.mark.comfy_code

# What real svd / svd_xt files carry besides the three parts (ComfyUI logs them as "left over keys"):
# remnants of OpenCLIP's text tower and the conditioner's own copy of the VAE. Loaders ignore them.
LEFTOVERS = {"conditioner.embedders.0.open_clip.model.logit_scale": torch.ones(()),
             "conditioner.embedders.0.open_clip.model.token_embedding.weight": torch.zeros(8, 4),
             "conditioner.embedders.3.encoder.encoder.conv_in.weight": torch.zeros(32, 3, 3, 3)}


def comfy_unet(comfy_code):
    """ComfyUI's full-size SVD UNet: SVD_img2vid's own entries plus what its model detection derives from an
    SVD file (test_full_size_unet_keys_map_one_to_one checks that detection gives exactly this)."""
    config = {"image_size": 32, "use_checkpoint": False, "use_spatial_transformer": True, "legacy": False,
              "num_classes": "sequential", "out_channels": 4, "num_res_blocks": [2, 2, 2, 2],
              "channel_mult": [1, 2, 4, 4], "transformer_depth_output": [1] * 9 + [0] * 3,
              "transformer_depth_middle": 1,
              "extra_ff_mix_layer": True, "use_spatial_context": True, "merge_strategy": "learned_with_images",
              "merge_factor": 0.0, "video_kernel_size": [3, 1, 1], "disable_temporal_crossattention": False,
              **comfy_code.svd.unet_config, **comfy_code.svd.unet_extra_config}
    return comfy_code.UNetModel(**config, operations=comfy_code.ops.disable_weight_init, dtype=torch.float32), config


def comfy_clip(comfy_code, tiny: bool, device=None):
    """ComfyUI's CLIP vision model with its ViT-H/14 config (comfy/clip_vision_config_h.json), or that
    config at tiny_svd_configs()'s size."""
    config = json.loads(comfy_code.clip_h_json.read_text())
    if tiny:
        ours = tiny_svd_configs()["image_encoder"]
        config |= {k: ours[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                        "image_size", "patch_size", "projection_dim")}
    return comfy_code.clip_model.CLIPVisionModelProjection(config, torch.float32, device, comfy_code.ops.manual_cast)


def randomize(module: torch.nn.Module, seed: int) -> None:
    """ComfyUI's modules skip weight init: fill every parameter (norm scales around 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            for name, p in m.named_parameters(recurse=False):
                is_scale = isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)) and name == "weight"
                p.copy_((1.0 if is_scale else 0.0) + 0.05 * torch.randn(p.shape, generator=g))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def shapes(state: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


# --- A tiny single file from ComfyUI's modules --------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(comfy_code, tmp_path_factory):
    """ComfyUI's UNet, VAE and CLIP vision at tiny_svd_configs()'s size, random weights, saved as ONE
    SGM-layout file."""
    unet, vae, clip = comfy_code.tiny_unet(), comfy_code.tiny_vae(), comfy_clip(comfy_code, tiny=True)
    for seed, module in enumerate((unet, vae, clip)):
        randomize(module.eval(), seed)
    tensors = {UNET_PREFIX + k: v for k, v in unet.state_dict().items()}
    tensors |= {VAE_PREFIX + k: v for k, v in vae.state_dict().items()}
    tensors |= {CLIP_PREFIX + k: v for k, v in to_openclip(clip.state_dict()).items()}  # the file stores OpenCLIP names
    tensors |= LEFTOVERS
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    path = tmp_path_factory.mktemp("checkpoints") / "tiny_svd_xt.safetensors"
    save_file(tensors, str(path))
    # ComfyUI reads the image encoder back through its own OpenCLIP converter.
    from_file = comfy_clip(comfy_code, tiny=True).eval()
    from_file.load_state_dict(comfy_code.clip_vision.convert_to_transformers(
        {k: v for k, v in tensors.items() if k.startswith(CLIP_PREFIX)}, CLIP_PREFIX), strict=True)
    return SimpleNamespace(path=path, tensors=tensors, unet=unet, vae=vae, clip=from_file)


@pytest.fixture(scope="module")
def loaded(tiny):
    return load_svd(tiny.path, torch.float32, configs=tiny_svd_configs())


@comfy_code_test
def test_the_file_loads_whole_frozen_and_named(tiny, loaded):
    assert loaded.name == "tiny_svd_xt.safetensors" and loaded.num_frames == 4  # the config's, not the name's
    for module in (loaded.unet, loaded.vae, loaded.image_encoder):
        tensors = [*module.parameters(), *module.buffers()]
        assert not any(t.is_meta or t.requires_grad for t in tensors) and not module.training
        assert all(t.dtype == torch.float32 for t in module.parameters())
    assert loaded.feature_extractor.crop_size == {"height": 32, "width": 32}
    configs = tiny_svd_configs()
    del configs["unet"]["num_frames"]
    assert load_svd(tiny.path, configs=configs).num_frames == 25  # "xt" in the name


@comfy_code_test
def test_fp16_file_keeps_its_dtype_unless_told(tiny, loaded, tmp_path):
    """svd_xt_fp16.safetensors: dtype None keeps fp16 (the UNet's; a part stored in fp32 follows it), except
    the VAE, which runs in float32 under a float16 model as SVD's config asks (``force_upcast``)."""
    path = tmp_path / "svd_xt_fp16.safetensors"
    save_file({k: v.half() if not k.startswith(CLIP_PREFIX) else v for k, v in tiny.tensors.items()}, str(path))
    half = load_svd(path, configs=tiny_svd_configs())
    assert_same_weights(loaded, half, torch.float16)
    assert (half.unet.dtype, half.image_encoder.dtype, half.vae.dtype) == (torch.float16, torch.float16, torch.float32)
    bf16 = load_svd(path, torch.bfloat16, configs=tiny_svd_configs())
    assert bf16.image_encoder.dtype == bf16.vae.dtype == torch.bfloat16


@comfy_code_test
def test_unet_matches_comfyuis(comfy_code, tiny, loaded):
    """The same SVD call in both conventions.

    diffusers: ``unet(sample (B, T, 8, h, w), timestep (B,), encoder_hidden_states (B, 1, D), added_time_ids (B, 3))``.
    ComfyUI (model_base.SVD_img2vid): frames are flattened into the batch as ``(b t)`` and every per-clip
    input is repeated per frame; ``y`` is ``encode_adm``'s ``[emb(fps - 1), emb(motion_bucket), emb(augmentation)]``
    with ``Timestep(256)`` sinusoidal embeddings ([cos, sin]), which is exactly diffusers'
    ``add_time_proj(added_time_ids.flatten()).reshape(B, -1)`` (``Timesteps(256, flip_sin_to_cos=True,
    downscale_freq_shift=0)``); ``num_video_frames`` = T; ``image_only_indicator`` zeros ``(B, T)`` (what
    diffusers always uses internally); ``context`` = the CLIP embedding per frame. Both take the 8 input
    channels as [c_in * noisy latents, conditioning-frame latents] and the timestep as c_noise = 0.25 ln(sigma).
    """
    B, T = 2, 3
    g = torch.Generator().manual_seed(1)
    x, context = torch.randn(B, T, 8, 8, 8, generator=g), torch.randn(B, 1, 32, generator=g)
    ids = torch.tensor([[5.0, 127.0, 0.02], [7.0, 30.0, 0.1]])  # fps - 1, motion bucket, noise augmentation
    c_noise = torch.tensor([0.3, -1.2])
    y = torch.cat([comfy_code.Timestep(8)(ids[:, i]) for i in range(3)], dim=1)
    with torch.no_grad():
        ours = loaded.unet(x, c_noise, encoder_hidden_states=context, added_time_ids=ids).sample
        theirs = tiny.unet(x.flatten(0, 1), c_noise.repeat_interleave(T), context=context.repeat_interleave(T, 0),
                           y=y.repeat_interleave(T, 0), num_video_frames=T, image_only_indicator=torch.zeros(B, T))
    assert ours.shape == (B, T, 4, 8, 8)
    assert rel(ours.flatten(0, 1), theirs) < 1e-5


@comfy_code_test
def test_vae_matches_comfyuis(tiny, loaded):
    """Encoder moments and mode, and the temporal decoder: ComfyUI's VideoDecoder takes its whole batch
    as one clip, diffusers' ``decode`` takes ``num_frames`` frames per clip from a ``(b t)`` batch."""
    T = 3
    g = torch.Generator().manual_seed(2)
    image, z = torch.rand(2 * T, 3, 32, 32, generator=g) * 2 - 1, torch.randn(T, 4, 4, 4, generator=g)
    with torch.no_grad():
        assert rel(loaded.vae.quant_conv(loaded.vae.encoder(image)), tiny.vae.encoder(image)) < 1e-5
        assert rel(loaded.vae.encode(image).latent_dist.mode(), tiny.vae.encode(image)) < 1e-5
        ours = loaded.vae.decode(z, num_frames=T).sample
        assert rel(ours, tiny.vae.decode(z)) < 1e-5
        assert rel(loaded.vae.decode(z, num_frames=1).sample, ours) > 1e-3  # the temporal layers took part


@comfy_code_test
def test_image_encoder_matches_comfyuis(tiny, loaded):
    """image_embeds (SVD's cross-attention context) and the last hidden state, from normalised pixels."""
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = loaded.image_encoder(pixels)
        last, _, embeds, _ = tiny.clip(pixel_values=pixels)
    assert rel(ours.image_embeds, embeds) < 1e-5
    assert rel(ours.last_hidden_state, last) < 1e-5


@comfy_code_test
def test_architecture_is_read_off_the_file(comfy_code, tmp_path):
    """A single-file SVD whose architecture is not given: it is read off the file's tensor shapes (here
    64 channels per attention head, as ComfyUI's model detection assumes, and a CLIP of width 64)."""
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


# --- diffusers folders (the library alone) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def models():
    return tiny_svd_models()


def assert_same_weights(a, b, dtype=None) -> None:
    for x, y in ((a.unet, b.unet), (a.vae, b.vae), (a.image_encoder, b.image_encoder)):
        sx, sy = x.state_dict(), y.state_dict()
        assert sx.keys() == sy.keys()
        assert all(torch.equal(sx[k].to(dtype or sx[k].dtype).to(sy[k].dtype), sy[k]) for k in sx)


def test_diffusers_folder_round_trip(models, tmp_path):
    save_svd_folder(models, tmp_path / "svd-tiny")
    again = load_svd(tmp_path / "svd-tiny")
    assert_same_weights(models, again)
    assert again.num_frames == 4 and again.name == "svd-tiny" and again.unet.dtype == torch.float32
    assert all(m.eps == 1e-5 for n, m in again.unet.named_modules() if ".resnets." in n
               and isinstance(m, torch.nn.GroupNorm))  # the original eps, not diffusers' 1e-6 in some blocks
    assert dict(again.scheduler.config) | SCHEDULER_CONFIG == dict(again.scheduler.config)


def test_fp16_variant_is_used_when_present(models, tmp_path):
    """Published folders hold fp32 files and ``*.fp16.safetensors``: the fp16 ones load unless fp32 is asked for."""
    half = copy.deepcopy(models)
    for module in (half.unet, half.vae, half.image_encoder):
        module.half()
    save_svd_folder(half, tmp_path / "svd", variant="fp16")
    save_svd_folder(models, tmp_path / "svd")
    half = load_svd(tmp_path / "svd")
    assert_same_weights(models, half, torch.float16)
    assert (half.unet.dtype, half.vae.dtype) == (torch.float16, torch.float32)  # the VAE upcast, as SVD's config asks
    assert_same_weights(models, load_svd(tmp_path / "svd", torch.float32))


# --- Refusals ---------------------------------------------------------------------------------------------
def test_pickles_are_refused(models, tmp_path):
    (tmp_path / "svd_xt.ckpt").write_bytes(b"never unpickled")
    with pytest.raises(ValueError, match=r"only safetensors .* never pickled \.ckpt .* Get the \.safetensors"):
        load_svd(tmp_path / "svd_xt.ckpt")
    folder = tmp_path / "svd"
    save_svd_folder(models, folder)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(ValueError, match=r"never pickled \.bin"):
        load_svd(folder)


SVD_UNET_KEYS = [UNET_PREFIX + "input_blocks.1.0.time_stack.in_layers.0.weight",
                 UNET_PREFIX + "input_blocks.1.0.time_mixer.mix_factor"]


@pytest.mark.parametrize("keys, looks_like", [
    (["conditioner.embedders.1.model.ln_final.weight", UNET_PREFIX + "input_blocks.0.0.weight",
      VAE_PREFIX + "encoder.conv_in.weight"], "an SDXL checkpoint"),
    (["cond_stage_model.transformer.text_model.final_layer_norm.weight",
      UNET_PREFIX + "input_blocks.1.1.proj_in.weight", VAE_PREFIX + "encoder.conv_in.weight"],
     "a Stable Diffusion 1.x/2.x checkpoint"),
    (["diffusion_model.input_blocks.4.1.time_stack.0.attn1.to_q.lora_A.weight"], "a LoRA file"),
    (["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight"], "a LoRA file"),
    (["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"], "a Flux-style diffusion transformer"),
    (["encoder.conv_in.weight", "decoder.conv_in.weight", "decoder.mid.block_1.time_stack.in_layers.0.weight"],
     "a VAE on its own"),
    (["vision_model.encoder.layers.0.self_attn.q_proj.weight"], "a CLIP vision"),
    ([k[len(UNET_PREFIX):] for k in SVD_UNET_KEYS], "a Stable Video Diffusion UNet on its own"),
    (SVD_UNET_KEYS, "a Stable Video Diffusion UNet without its VAE and image encoder"),
    (SVD_UNET_KEYS + [VAE_PREFIX + "decoder.mid.block_1.conv1.weight", CLIP_PREFIX + "proj"],
     "the SVD variant with a per-frame image decoder"),
    (["something.else"], "an unknown model"),
])
def test_files_that_are_not_svd_say_what_they_look_like(tmp_path, keys, looks_like):
    assert not is_svd_checkpoint(keys) and describe_checkpoint(keys).startswith(looks_like)
    path = tmp_path / "model.safetensors"
    save_file({k: torch.zeros(1) for k in keys}, str(path))
    with pytest.raises(ValueError, match=rf"model\.safetensors is not a Stable Video Diffusion checkpoint: it looks "
                                         rf"like {looks_like}.*svd_xt\.safetensors.* in models/checkpoints"):
        load_svd(path)


@comfy_code_test
def test_missing_unknown_and_misshapen_weights_are_named(tiny, tmp_path):
    path = tmp_path / "svd_xt.safetensors"
    dropped = UNET_PREFIX + "input_blocks.1.1.time_stack.0.attn1.to_q.weight"
    save_file({k: v for k, v in tiny.tensors.items() if k != dropped}, str(path))
    missing = r"down_blocks\.0\.attentions\.0\.temporal_transformer_blocks\.0\.attn1\.to_q\.weight"
    with pytest.raises(ValueError, match=rf"the UNet weights do not fit .* 1 missing \(e\.g\. {missing}\).*download"):
        load_svd(path, configs=tiny_svd_configs())
    save_file(tiny.tensors | {UNET_PREFIX + "input_blocks.1.0.extra.weight": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError, match=r"'in.*extra.weight' is not a weight of the SVD UNet"):
        load_svd(path, configs=tiny_svd_configs())
    save_file(tiny.tensors, str(path))
    configs = tiny_svd_configs()
    configs["image_encoder"]["projection_dim"] = 64
    with pytest.raises(ValueError, match=r"image encoder weights do not fit .* with other shapes .*visual_projection"):
        load_svd(path, configs=configs)


def test_missing_and_damaged_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="models/checkpoints"):
        load_svd(tmp_path / "svd_xt.safetensors")
    (tmp_path / "svd_xt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    with pytest.raises(ValueError, match="cannot read svd_xt.safetensors as safetensors"):
        load_svd(tmp_path / "svd_xt.safetensors")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="not a diffusers Stable Video Diffusion folder"):
        load_svd(tmp_path / "folder")


# --- The full-size architecture, on the meta device (no memory) --------------------------------------------
@pytest.fixture(scope="module")
def ours_full_size():
    """Our SVD-XT (``build_svd``, as the benchmarks build it) on the meta device."""
    return build_svd(25, device="meta")


@pytest.fixture(scope="module")
def full_size(comfy_code, ours_full_size):
    """ComfyUI's real SVD UNet, VAE and ViT-H/14 next to ours, all on the meta device."""
    with torch.device("meta"):
        unet, unet_config = comfy_unet(comfy_code)
        vae, clip = comfy_code.vae(), comfy_clip(comfy_code, tiny=False, device="meta")
    return SimpleNamespace(unet=unet.state_dict(), unet_config=unet_config, vae=vae.state_dict(),
                           clip=clip.state_dict(), ours=ours_full_size)


@comfy_code_test
def test_full_size_unet_keys_map_one_to_one(comfy_code, full_size):
    # The UNet above is what ComfyUI detects from an SVD file's keys, and ComfyUI takes it for SVD.
    detected = comfy_code.detection.detect_unet_config(full_size.unet, "")
    assert detected | comfy_code.svd.unet_extra_config == full_size.unet_config
    assert type(comfy_code.detection.model_config_from_unet_config(detected, full_size.unet)) is comfy_code.svd
    ours = shapes(full_size.ours.unet.state_dict())
    mapped = {unet_sgm_to_diffusers(k): tuple(v.shape) for k, v in full_size.unet.items()}
    assert len(mapped) == len(full_size.unet) == 1428 and mapped == ours
    assert all(unet_diffusers_to_sgm(unet_sgm_to_diffusers(k)) == k for k in full_size.unet)


@comfy_code_test
def test_full_size_unet_layer_paths_for_comfyui_loras(full_size):
    """Every Linear layer (what LoRAs adapt) has an SGM path, which names a weight of the same shape in ComfyUI."""
    linears = [n for n, m in full_size.ours.unet.named_modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) > 400
    for name in linears:
        sgm = unet_diffusers_to_sgm_module_path(name)
        assert full_size.unet[sgm + ".weight"].shape == full_size.ours.unet.get_submodule(name).weight.shape
        assert unet_sgm_to_diffusers_module_path(sgm) == name
    assert (unet_diffusers_to_sgm_module_path("down_blocks.1.attentions.0.temporal_transformer_blocks.0.attn1.to_q")
            == "input_blocks.4.1.time_stack.0.attn1.to_q")
    with pytest.raises(KeyError):
        unet_diffusers_to_sgm_module_path("down_blocks.0.resnets.0")  # a container, not a layer


@comfy_code_test
def test_full_size_vae_keys_map_one_to_one(full_size):
    assert shapes(vae_state_from_sgm(full_size.vae)) == shapes(full_size.ours.vae.state_dict())


@comfy_code_test
def test_full_size_openclip_keys_map_one_to_one(comfy_code, full_size):
    openclip = to_openclip(full_size.clip)  # as svd_xt.safetensors stores them: q, k, v fused per layer
    assert len(openclip) == 8 + 32 * 12 and len(full_size.clip) == 8 + 32 * 16
    # ComfyUI's own converter reads these names back into its model: they are the file's names.
    back = comfy_code.clip_vision.convert_to_transformers({CLIP_PREFIX + k: v for k, v in openclip.items()}, CLIP_PREFIX)
    assert shapes(back) == shapes(full_size.clip)
    assert shapes(openclip_to_clip_vision(openclip)) == shapes(full_size.ours.image_encoder.state_dict())


@comfy_code_test
def test_full_size_file_is_recognised_and_gives_the_real_configs(full_size):
    file = {UNET_PREFIX + k: tuple(v.shape) for k, v in full_size.unet.items()}
    file |= {VAE_PREFIX + k: tuple(v.shape) for k, v in full_size.vae.items()}
    file |= {CLIP_PREFIX + k: tuple(v.shape) for k, v in to_openclip(full_size.clip).items()}
    file |= {k: tuple(v.shape) for k, v in LEFTOVERS.items()}
    assert is_svd_checkpoint(file)
    assert configs_from_checkpoint(file, 25) == svd_configs(25)
    assert configs_from_checkpoint(file, 14)["unet"]["num_frames"] == 14


def test_real_configs_and_sizes(ours_full_size):
    from diffusers import EulerDiscreteScheduler, UNetSpatioTemporalConditionModel

    ours = ours_full_size
    # SVD-XT's UNet is diffusers' default one (sample_size only sets a default resolution)
    signature = inspect.signature(UNetSpatioTemporalConditionModel.__init__).parameters
    assert {k: v for k, v in UNET_CONFIG.items() if k != "sample_size"} == {
        k: signature[k].default for k in UNET_CONFIG if k != "sample_size"}
    # parameters in millions: the UNet, the VAE, OpenCLIP ViT-H/14 with its projection
    count = lambda module: round(sum(p.numel() for p in module.parameters()) / 1e6)  # noqa: E731
    assert (count(ours.unet), count(ours.vae), count(ours.image_encoder)) == (1525, 98, 632)
    assert ours.vae.config.scaling_factor == VAE_CONFIG["scaling_factor"] == 0.18215
    assert ours.image_encoder.config.hidden_act == IMAGE_ENCODER_CONFIG["hidden_act"] == "gelu"
    assert ours.num_frames == 25 and ours.scheduler.config.prediction_type == "v_prediction"
    # "continuous" timesteps: the scheduler hands the UNet c_noise = 0.25 ln(sigma), from sigma_max 700 down
    scheduler = EulerDiscreteScheduler(**SCHEDULER_CONFIG)
    scheduler.set_timesteps(25)
    assert float(scheduler.sigmas[0]) == pytest.approx(700.0) and float(scheduler.sigmas[-2]) == pytest.approx(0.002)
    assert torch.allclose(scheduler.timesteps, 0.25 * scheduler.sigmas[:-1].log(), atol=1e-5)
