"""`python -m recapture` as a person runs it: files written, and errors on stderr with a non-zero exit."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from comfy_harness import REPO
from recapture import camera
from recapture.demo_clip import write_demo_clip


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recapture", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sample")
    write_demo_clip(folder, num_frames=4, width=128, height=64)
    return folder


def test_anchor_command_writes_videos_npz_and_path(sample, tmp_path):
    out = tmp_path / "out"
    result = run_cli("anchor", "--video", str(sample / "recapture_sample.mp4"), "--depth",
                     str(sample / "recapture_sample_depth"), "--depth-kind", "inverse", "--near", "2.4", "--far",
                     "6", "--edge-threshold", "0", "--camera", "orbit_right", "--amount", "10", "--frames", "4",
                     "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = np.load(out / "anchor.npz")
    assert data["anchor"].shape == (4, 64, 128, 3) and data["anchor"].dtype == np.float32
    assert data["mask"].shape == (4, 64, 128) and 0.5 < data["mask"][-1].mean() < 1.0
    assert data["mask"][0].mean() > 0.99  # the path starts at the source view
    assert (out / "anchor.mp4").stat().st_size > 0 and (out / "mask.mp4").stat().st_size > 0
    assert camera.load_path_file(out / "camera_path.json").num_frames == 4


def test_depth_npy_and_camera_file(sample, tmp_path):
    depth = np.full((4, 64, 128), 3.0, dtype=np.float32)
    np.save(tmp_path / "depth.npy", depth)
    camera.save_path_json(camera.preset_path("truck_left", 4, 10, pivot_distance=3.0), tmp_path / "path.json")
    result = run_cli("anchor", "--video", str(sample / "recapture_sample.mp4"), "--depth", str(tmp_path / "depth.npy"),
                     "--depth-kind", "metric", "--camera-file", str(tmp_path / "path.json"), "--frames", "4",
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    mask = np.load(tmp_path / "out" / "anchor.npz")["mask"]
    # a flat wall at 3 trucked left by 0.3: the strip the source never saw opens on the left
    assert mask[-1][:, :5].max() == 0 and mask[-1][:, 20:].min() == 1


def test_depth_npy_of_the_whole_video_gives_the_selected_frames(sample, tmp_path):
    """One depth map per source frame works with --start/--frames/--every: the same frames are taken;
    a count that fits neither the selection nor the video is named."""
    depth = np.full((4, 64, 128), 3.0, dtype=np.float32)
    depth[1] = 2.0  # the one selected map: a nearer wall than the others
    np.save(tmp_path / "whole.npy", depth)
    np.save(tmp_path / "short.npy", depth[:3])
    base = ["anchor", "--video", str(sample / "recapture_sample.mp4"), "--depth-kind", "metric", "--camera",
            "static", "--start", "1", "--frames", "2", "--every", "2"]
    result = run_cli(*base, "--depth", str(tmp_path / "whole.npy"), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "out" / "anchor.npz")["anchor"].shape[0] == 2
    from recapture.cli import _read_depth
    from recapture.video import ClipSelection

    taken = _read_depth(str(tmp_path / "whole.npy"), ClipSelection(start=1, count=2, step=2), None)
    assert taken.shape == (2, 64, 128) and taken[0].max() == 2.0 and taken[1].min() == 3.0  # maps 1 and 3
    result = run_cli(*base, "--depth", str(tmp_path / "short.npy"), "--out", str(tmp_path / "no"))
    assert result.returncode == 2 and "has 3 maps: give one per selected frame (2) or one per source frame (at " \
        "least 4" in result.stderr


def test_frames_all_or_left_out_takes_the_whole_clip(sample, tmp_path):
    """--frames all, or no --frames, takes every selected frame to the end, from the video and its depth."""
    base = ["anchor", "--video", str(sample / "recapture_sample.mp4"), "--depth", str(sample / "recapture_sample_depth"),
            "--depth-kind", "inverse", "--camera", "static"]
    for extra, frames in ((["--frames", "all"], 4), ([], 4), (["--start", "1", "--every", "2"], 2)):
        out = tmp_path / str(len(extra))
        result = run_cli(*base, *extra, "--out", str(out))
        assert result.returncode == 0, result.stderr
        assert np.load(out / "anchor.npz")["anchor"].shape == (frames, 64, 128, 3), extra
    result = run_cli(*base, "--frames", "none", "--out", str(tmp_path / "no"))
    assert result.returncode == 2 and "argument --frames: 'none' is not an integer" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--video", "missing.mp4", "--depth", "d.npy", "--depth-kind", "metric", "--camera", "static"], "does not exist"),
    (["--video", "@sample", "--depth", "@bad_npy", "--depth-kind", "metric", "--camera", "static"],
     "depth .npy must have shape"),
    (["--video", "@sample", "--depth", "@nan_npy", "--depth-kind", "metric", "--camera", "static"], "no valid value"),
    (["--video", "@sample", "--depth", "@nan_npy", "--depth-kind", "metric", "--camera", "static", "--fov", "0"],
     "argument --fov: 0 is outside 1..179"),  # a setting's range (recapture.config), checked by argparse
])
def test_bad_input_exits_non_zero_with_the_fix_on_stderr(sample, tmp_path, args, message):
    np.save(tmp_path / "bad.npy", np.zeros((4, 64), np.float32))
    np.save(tmp_path / "nan.npy", np.full((4, 64, 128), np.nan, np.float32))
    where = {"@sample": str(sample / "recapture_sample.mp4"), "@bad_npy": str(tmp_path / "bad.npy"),
             "@nan_npy": str(tmp_path / "nan.npy")}
    out = tmp_path / "out"
    result = run_cli("anchor", *[where.get(a, a) for a in args], "--frames", "4", "--out", str(out))
    assert result.returncode == 2
    assert "error: " in result.stderr.strip().splitlines()[-1] and message in result.stderr
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_help_explains_every_option():
    result = run_cli("anchor", "--help")
    assert result.returncode == 0
    for option in ("--video", "--depth", "--depth-kind", "--fov", "--camera", "--camera-file", "--amount", "--out"):
        assert option in result.stdout


@pytest.fixture(scope="module")
def tiny_svd(tmp_path_factory):
    from conftest import save_tiny_svd_folder

    return save_tiny_svd_folder(tmp_path_factory.mktemp("svd") / "tiny-svd")


def frame_count(path) -> tuple[int, int, int]:
    import av

    with av.open(str(path)) as c:
        frames = list(c.decode(c.streams.video[0]))
    return len(frames), frames[0].width, frames[0].height


@pytest.fixture(scope="module")
def anchor_file(sample, tmp_path_factory):
    """anchor.npz of the sample at 64x64, as `anchor` writes it for `train` and `sample`."""
    out = tmp_path_factory.mktemp("anchor")
    result = run_cli("anchor", "--video", str(sample / "recapture_sample.mp4"), "--depth",
                     str(sample / "recapture_sample_depth"), "--depth-kind", "inverse", "--near", "2.4", "--far", "6",
                     "--camera", "orbit_left", "--amount", "10", "--frames", "4", "--size", "64x64", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out / "anchor.npz"


def test_train_then_sample_with_the_written_lora_pair(sample, tiny_svd, anchor_file, tmp_path):
    """The method in two commands, reusing an anchor: `train` writes the named LoRA pair, `sample` reads it
    back (the whole method in one `run`, bit for bit: tests/test_no_behaviour_change.py)."""
    result = run_cli("train", "--anchor", str(anchor_file), "--video", str(sample / "recapture_sample.mp4"),
                     "--svd", str(tiny_svd), "--steps", "1", "--rank", "4", "--lora-name", "pair", "--low-memory",
                     "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "train" in result.stderr  # the progress bar
    assert {p.name for p in tmp_path.glob("*.safetensors")} == {"pair_temporal.safetensors", "pair_spatial.safetensors"}
    result = run_cli("sample", "--anchor", str(anchor_file), "--svd", str(tiny_svd),
                     "--lora-temporal", str(tmp_path / "pair_temporal.safetensors"),
                     "--lora-spatial", str(tmp_path / "pair_spatial.safetensors"),
                     "--sample-steps", "2", "--refine", "0", "--fps", "8", "--low-memory", "--decode-chunk-size", "2",
                     "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "sample" in result.stderr
    assert frame_count(tmp_path / "recaptured.mp4") == (4, 64, 64)


def test_train_refuses_a_pickled_model(sample, tmp_path):
    np.savez(tmp_path / "anchor.npz", anchor=np.zeros((4, 64, 64, 3), np.float32), mask=np.ones((4, 64, 64), np.float32))
    (tmp_path / "svd.ckpt").write_bytes(b"x")
    result = run_cli("train", "--anchor", str(tmp_path / "anchor.npz"), "--video", str(sample / "recapture_sample.mp4"),
                     "--svd", str(tmp_path / "svd.ckpt"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "never pickled" in result.stderr


def test_out_of_memory_is_advice_on_stderr(sample, tiny_svd, tmp_path, monkeypatch, capsys):
    """A full GPU (made to happen on the CPU) ends the command with the ways out in the command line's
    terms, not a traceback; sampling's also name the decoder's chunk size."""
    import diffusers

    from recapture.cli import main

    np.savez(tmp_path / "anchor.npz", anchor=np.full((4, 64, 64, 3), 0.5, np.float32), mask=np.ones((4, 64, 64), np.float32))
    common = ["--anchor", str(tmp_path / "anchor.npz"), "--svd", str(tiny_svd)]
    assert main(["train", *common, "--video", str(sample / "recapture_sample.mp4"), "--steps", "1", "--rank", "4",
                 "--out", str(tmp_path / "pair")]) == 0  # a LoRA pair to sample with

    def exhausted(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(diffusers.UNetSpatioTemporalConditionModel, "forward", exhausted)
    capsys.readouterr()
    code = main(["train", *common, "--video", str(sample / "recapture_sample.mp4"), "--steps", "1", "--rank", "4",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert ("error: out of GPU memory while training on 4 frames at 64x64. Ways out: fewer frames (--frames), a lower "
            "resolution (e.g. --size 64x64), --low-memory, or close other programs") in err
    assert not list((tmp_path / "out").rglob("*.safetensors"))  # no LoRA file
    code = main(["sample", *common, "--lora-temporal", str(tmp_path / "pair" / "recapture_temporal.safetensors"),
                 "--lora-spatial", str(tmp_path / "pair" / "recapture_spatial.safetensors"), "--sample-steps", "2",
                 "--out", str(tmp_path / "sampled")])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: out of GPU memory while sampling 4 frames at 64x64. Ways out: " in err
    assert "--low-memory with --decode-chunk-size 2" in err
    assert not (tmp_path / "sampled" / "recaptured.mp4").exists()
    # a clip longer than the model's window: fewer frames would not help, and the message says so
    np.savez(tmp_path / "long.npz", anchor=np.full((9, 64, 64, 3), 0.5, np.float32), mask=np.ones((9, 64, 64), np.float32))
    code = main(["sample", "--anchor", str(tmp_path / "long.npz"), "--svd", str(tiny_svd), "--lora-temporal",
                 str(tmp_path / "pair" / "recapture_temporal.safetensors"), "--lora-spatial",
                 str(tmp_path / "pair" / "recapture_spatial.safetensors"), "--out", str(tmp_path / "long")])
    err = capsys.readouterr().err
    assert code == 2 and ("error: out of GPU memory while sampling 9 frames at 64x64 (4 at a time: a shorter clip "
                          "would not need less). Ways out: a lower resolution (e.g. --size 64x64), --low-memory") in err


def test_run_on_a_60_frame_clip_in_windows(tiny_svd, tmp_path):
    """`run` on a 60-frame clip with the tiny model (a 4-frame window): the whole clip goes through aligned
    depth, the anchor, training and sampling/refining in 20 overlapping windows, and comes out 60 frames long."""
    write_demo_clip(tmp_path / "clip", num_frames=60, width=64, height=64)
    out = tmp_path / "out"
    result = run_cli("run", "--video", str(tmp_path / "clip" / "recapture_sample.mp4"), "--depth",
                     str(tmp_path / "clip" / "recapture_sample_depth"), "--depth-kind", "inverse", "--near", "2.4",
                     "--far", "6", "--align-depth", "--camera", "orbit_left", "--amount", "10", "--svd", str(tiny_svd),
                     "--steps", "2", "--rank", "4", "--sample-steps", "2", "--refine", "0.5", "--window-overlap", "1",
                     "--decode-chunk-size", "8", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert np.load(out / "anchor.npz")["anchor"].shape == (60, 64, 64, 3)
    assert frame_count(out / "recaptured.mp4") == (60, 64, 64)
    assert "sample (20 windows a step)" in result.stderr and "refine (20 windows a step)" in result.stderr
    assert "40/40" in result.stderr  # sampling: 2 steps of 20 windows, a window at a time
