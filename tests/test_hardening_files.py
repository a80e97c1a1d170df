"""Hardening of file reads and writes in the library (issue 16): decompression bombs are refused before
any decoding, LoRA files are never replaced (not even by a save racing another), finished files get the
permissions new files get, and damaged model files are named with the fix.

The server-side cases (symlinked frames, bombs through Load Video, a symlinked temp/recapture, a damaged
model in a node) are in ``test_comfy_hardening_files.py``."""

from __future__ import annotations

import os
import stat
import struct
import threading
from pathlib import Path

import pytest
import torch

from conftest import gif_bomb, png_bomb, save_tiny_depth_model, save_tiny_svd_folder


# --- decompression bombs -------------------------------------------------------------------------------
@pytest.fixture
def no_image_decoding(monkeypatch):
    """Counts PIL's pixel decoding (``ImageFile.load``) while the test runs."""
    from PIL import ImageFile

    calls = []
    original = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: calls.append(1) or original(self))
    return calls


def test_a_gif_declaring_a_huge_screen_is_refused_before_a_frame_is_decoded(tmp_path):
    from recapture.video import ClipSelection, VideoError, read_clip

    path = tmp_path / "bomb.gif"
    path.write_bytes(gif_bomb())
    assert path.stat().st_size < 400
    decoded = []
    with pytest.raises(VideoError, match=r"bomb.gif declares 16000x16000 pixels per frame; the limit is 40 megapixels"):
        read_clip(path, ClipSelection(count=14), on_frame=lambda: decoded.append(1))
    assert decoded == []
    # a small GIF of the same make reads, at its own size, resized frame by frame when a size is asked
    path.write_bytes(gif_bomb(64, 48, 3))
    frames, _ = read_clip(path, ClipSelection(count=3))
    assert frames.shape == (3, 48, 64, 3)
    frames, _ = read_clip(path, ClipSelection(count=3), size=(32, 32), mode="crop")
    assert frames.shape == (3, 32, 32, 3)


def test_a_frame_folder_of_one_bit_bombs_is_refused_before_decoding(tmp_path, no_image_decoding):
    from recapture.config import ClipConfig
    from recapture.video import ClipSelection, VideoError, read_clip

    assert ClipConfig.max_megapixels == 40
    folder = tmp_path / "bombs"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i:04d}.png").write_bytes(png_bomb(13000, 13000))
    assert sum(p.stat().st_size for p in folder.iterdir()) < 70_000
    with pytest.raises(VideoError, match=r"0000.png declares 13000x13000 pixels per frame; the limit is 40 "
                                         r"megapixels.*scale the frames down"):
        read_clip(folder, ClipSelection(count=3))
    assert no_image_decoding == []
    # beyond PIL's own limit PIL refuses in Image.open: the same message, not PIL's
    (folder / "0000.png").write_bytes(png_bomb(20000, 20000))
    with pytest.raises(VideoError, match=r"0000.png declares 400000000 pixels per frame; the limit is 40 megapixels"):
        read_clip(folder, ClipSelection(count=3))
    assert no_image_decoding == []


def test_frames_are_resized_one_by_one_and_equal_resizing_the_whole_clip(tmp_path):
    from PIL import Image

    from recapture.video import ClipSelection, fit_frames, read_clip

    folder = tmp_path / "frames"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        pixels = (torch.rand(75, 130, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
    whole, _ = read_clip(folder, ClipSelection(count=3))
    for mode in ("crop", "pad", "stretch"):
        one_by_one, _ = read_clip(folder, ClipSelection(count=3), size=(64, 64), mode=mode)
        assert torch.equal(one_by_one, fit_frames(whole, 64, 64, mode))


# --- LoRA files are never replaced ---------------------------------------------------------------------
def tiny_lora(value: float):
    from recapture.lora import lora_pair

    def state(module: str) -> dict[str, torch.Tensor]:
        prefix = f"diffusion_model.input_blocks.1.1.{module}.0.attn1.to_q"
        return {f"{prefix}.lora_A.weight": torch.full((2, 4), value), f"{prefix}.lora_B.weight": torch.zeros(4, 2),
                f"{prefix}.alpha": torch.tensor(2.0)}

    return lora_pair(state("time_stack"), state("transformer_blocks"), {"value": value})


@pytest.mark.parametrize("hard_links", [True, False], ids=["hard links", "no hard links (FAT, SMB)"])
def test_a_lora_file_that_appears_after_the_name_was_chosen_is_kept(tmp_path, monkeypatch, hard_links):
    import errno

    from recapture.lora import load_lora_pair, pair_paths, save_lora_pair

    if not hard_links:
        def no_link(*_):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_link)

    # the name is free when training starts...
    assert not any(p.exists() for p in pair_paths(tmp_path, "race").values())
    # ...and while it trains someone else saves under it
    theirs = pair_paths(tmp_path, "race")["spatial"]  # the second name of the pair: the first is given back
    theirs.write_bytes(b"someone else's LoRA")
    written = save_lora_pair(tmp_path, "race", tiny_lora(1.0))
    assert theirs.read_bytes() == b"someone else's LoRA"
    assert [p.name for p in written] == ["race_2_temporal.safetensors", "race_2_spatial.safetensors"]
    assert load_lora_pair(*written).config["value"] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "race_2_spatial.safetensors", "race_2_temporal.safetensors", "race_spatial.safetensors"]


def test_two_trainings_saving_under_one_name_at_once_keep_both(tmp_path):
    from recapture.lora import load_lora_pair, save_lora_pair

    writers = 4
    start, results = threading.Barrier(writers), {}

    def save(value: float) -> None:
        lora = tiny_lora(value)
        start.wait()
        results[value] = save_lora_pair(tmp_path, "same", lora)

    threads = [threading.Thread(target=save, args=(float(v),)) for v in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({p for paths in results.values() for p in paths}) == 2 * writers
    for value, paths in results.items():
        lora = load_lora_pair(*paths)
        a = next(v for k, v in lora.temporal.items() if k.endswith(".lora_A.weight"))
        assert lora.config["value"] == value and float(a.flatten()[0]) == value
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"same{suffix}_{adapter}.safetensors" for suffix in ("", "_2", "_3", "_4") for adapter in ("temporal", "spatial"))


# --- permissions -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=oct)
def test_finished_files_get_the_permissions_new_files_get(tmp_path, umask):
    """As ComfyUI's own outputs (PIL's ``open(path, "wb")``): 0o666 less the umask at the time of writing."""
    from recapture.lora import save_lora_pair
    from recapture.video import write_video

    old = os.umask(umask)
    try:
        (tmp_path / "plain").write_bytes(b"")
        files = [*save_lora_pair(tmp_path, "modes", tiny_lora(1.0)),
                 write_video(tmp_path / "clip.mp4", torch.zeros(2, 16, 16, 3), 8.0)]
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == expected
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {p.name: oct(expected) for p in files}


# --- damaged model files ---------------------------------------------------------------------------------
def damage(path: Path, header: bytes) -> None:
    """Replaces a safetensors file by one whose header is ``header`` (length prefix as the format has it)."""
    path.write_bytes(struct.pack("<Q", len(header)) + header)


@pytest.fixture(scope="module")
def depth_folder(tmp_path_factory) -> Path:
    return save_tiny_depth_model(tmp_path_factory.mktemp("depth") / "tiny-dpt")


def test_a_damaged_depth_model_names_the_file_and_the_fix(depth_folder):
    from recapture.depth import DepthModelError, load_depth_model

    weights = depth_folder / "model.safetensors"
    weights.write_bytes(struct.pack("<Q", 10**12) + b"{}")  # "header too large", and no file name, before
    with pytest.raises(DepthModelError, match=r"tiny-dpt/model.safetensors is damaged or incomplete \(.*header "
                                              r"too large.*\): download it again"):
        load_depth_model(depth_folder)
    damage(weights, b"{}")
    with pytest.raises(DepthModelError, match=r"tiny-dpt/model.safetensors is damaged or incomplete \(it holds no "
                                              r"weights\): download it again"):
        load_depth_model(depth_folder)


@pytest.fixture(scope="module")
def svd_folder(tmp_path_factory) -> Path:
    return save_tiny_svd_folder(tmp_path_factory.mktemp("svd") / "tiny-svd")


@pytest.mark.parametrize("header, problem", [(b"{}", "it holds no weights"),
                                              (b"{not json", "Error while deserializing header")])
def test_a_diffusers_folder_with_a_damaged_weight_file_names_it(svd_folder, tmp_path, header, problem):
    import shutil

    from recapture.svd import load_svd

    folder = tmp_path / "tiny-svd"
    shutil.copytree(svd_folder, folder)
    damage(folder / "unet" / "diffusion_pytorch_model.safetensors", header)
    with pytest.raises(ValueError, match=rf"tiny-svd/unet/diffusion_pytorch_model.safetensors is damaged or "
                                         rf"incomplete \({problem}.*\): download it again"):
        load_svd(folder, torch.float32)


def test_a_diffusers_folder_missing_some_weights_names_the_file(svd_folder, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from recapture.svd import load_svd

    folder = tmp_path / "tiny-svd"
    shutil.copytree(svd_folder, folder)
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    save_file({k: v for k, v in state.items() if not k.startswith("decoder.")}, str(weights))
    with pytest.raises(ValueError, match=r"tiny-svd/vae/diffusion_pytorch_model.safetensors is damaged or incomplete "
                                         r"\(\d+ weights are missing, e.g. decoder\..*\): download it again"):
        load_svd(folder, torch.float32)


def test_a_truncated_single_file_svd_names_the_file_and_the_fix(tmp_path):
    """Only some of the keys (as a download cut off and re-packed leaves them): not a KeyError."""
    from safetensors.torch import save_file

    from recapture.svd import CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX, load_svd

    path = tmp_path / "svd_xt.safetensors"
    save_file({UNET_PREFIX + "input_blocks.0.0.time_stack.weight": torch.zeros(1),
               UNET_PREFIX + "middle_block.0.time_mixer.mix_factor": torch.zeros(1),
               VAE_PREFIX + "decoder.up.0.block.0.time_stack.weight": torch.zeros(1),
               CLIP_PREFIX + "conv1.weight": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError, match=r"svd_xt.safetensors is damaged or incomplete \(no weight "
                                         r"'input_blocks.1.0.out_layers.3.weight'\): download svd.safetensors / "
                                         r"svd_xt.safetensors again"):
        load_svd(path)
