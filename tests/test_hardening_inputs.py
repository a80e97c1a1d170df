"""Input validation in the library and the command line (issue 16, items 4, 5 and 12): every setting is held
to its ``recapture.config`` range, NaN included, before any work; the nodes' ``validate_inputs`` never take
``**kwargs`` (that would switch ComfyUI's own range checks off for every input)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

from recapture.cli import main
from recapture.config import (ClipConfig, PointCloudConfig, SampleConfig, TrainConfig, check_setting, check_settings,
                              setting_of)

NAN = float("nan")
NODES = Path(__file__).resolve().parents[1] / "nodes"


def test_check_setting_refuses_nan_infinity_and_values_outside_the_range():
    assert check_setting(PointCloudConfig, "near", 2.0) == 2.0
    for value in (NAN, math.inf, -math.inf):
        with pytest.raises(ValueError, match=r"near must be a finite number between 0\.001 and 10000, got"):
            check_setting(PointCloudConfig, "near", value)
    with pytest.raises(ValueError, match="height must be between 64 and 4096, got 8192"):
        check_setting(ClipConfig, "height", 8192)
    with pytest.raises(ValueError, match="frame_count must be a whole number between 0 and 10000, got 2.5"):
        check_setting(ClipConfig, "frame_count", 2.5)
    with pytest.raises(ValueError, match="resize must be one of crop, pad, stretch, got 'zoom'"):
        check_setting(ClipConfig, "resize", "zoom")
    with pytest.raises(ValueError, match="noise_aug_strength must be a finite number between 0 and 1, got nan"):
        check_settings(TrainConfig(noise_aug_strength=NAN))
    check_settings(TrainConfig())
    check_settings(SampleConfig())


def test_clip_selection_and_size_are_held_to_the_clip_settings():
    from recapture.video import ClipSelection, VideoError, check_clip_size

    for kwargs, message in ((dict(count=10**9), "frame_count must be between 0 and 10000, got 1000000000"),
                            (dict(start=-1), "start_frame must be between 0 and 1000000, got -1"),
                            (dict(step=0), "every_nth must be between 1 and 1000, got 0")):
        with pytest.raises(VideoError, match=message):
            ClipSelection(**kwargs)
    check_clip_size(64, 4096)
    for size, message in (((0, 64), "width must be between 64 and 4096, got 0"),
                          ((-64, 64), "width must be between 64 and 4096, got -64"),
                          ((64, 8192), "height must be between 64 and 4096, got 8192"),
                          ((100, 64), "multiples of 64")):
        with pytest.raises(VideoError, match=message):
            check_clip_size(*size)
    assert setting_of(ClipConfig, "width").step == 64  # the multiple comes from the config


def test_nan_settings_are_refused_by_the_library_entry_points_before_any_work():
    from recapture.pointcloud import make_point_cloud
    from recapture.sampling import sample_video, sdedit
    from recapture.train import train_recapture_lora

    frames, depth = torch.rand(2, 8, 8, 3), torch.rand(2, 8, 8) + 0.5
    # NaN edge_threshold used to switch edge removal off silently
    with pytest.raises(ValueError, match="edge_threshold must be a finite number between 0 and 1, got nan"):
        make_point_cloud(frames, depth, kind="inverse", edge_threshold=NAN)
    # NaN strength used to fail with "cannot convert float NaN to integer"; no model is touched (None here)
    with pytest.raises(ValueError, match="strength must be a finite number between 0 and 1, got nan"):
        sdedit(None, None, torch.rand(2, 8, 8, 3), SampleConfig(refine_strength=NAN))
    # NaN guidance or LoRA strength used to give an all-black video
    for name in ("min_guidance", "max_guidance", "temporal_strength", "spatial_strength", "noise_aug_strength"):
        with pytest.raises(ValueError, match=f"{name} must be a finite number"):
            sample_video(None, None, torch.rand(8, 8, 3), 2, SampleConfig(**{name: NAN}))
    # NaN noise augmentation used to train LoRAs full of NaN
    with pytest.raises(ValueError, match="noise_aug_strength must be a finite number between 0 and 1, got nan"):
        train_recapture_lora(None, torch.rand(2, 16, 16, 3), torch.ones(2, 16, 16), torch.rand(2, 16, 16, 3),
                             TrainConfig(noise_aug_strength=NAN))


@pytest.mark.parametrize("argv, message", [
    (["--near", "nan"], "argument --near: nan is outside 0.001..10000"),
    (["--edge-threshold", "nan"], "argument --edge-threshold: nan is outside 0..1"),
    (["--size", "64x8192"], "error: height must be between 64 and 4096, got 8192"),
    (["--size", "0x64"], "error: width must be between 64 and 4096, got 0"),
])
def test_the_command_line_refuses_nan_and_sizes_outside_the_range(tmp_path, capsys, argv, message):
    base = ["anchor", "--video", str(tmp_path / "missing.mp4"), "--depth", str(tmp_path / "missing.npy"),
            "--depth-kind", "inverse", "--camera", "static", "--out", str(tmp_path / "out")]
    try:
        code = main(base + argv)
    except SystemExit as stop:  # argparse's own refusal
        code = stop.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_no_node_validate_inputs_takes_kwargs():
    """ComfyUI skips its min/max checks for every input a node's validate_inputs declares; with **kwargs it
    treats all as declared, so ranges nobody restates go unchecked (Load Video's `**_` did that)."""
    found, problems = 0, []
    for path in sorted(NODES.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == "validate_inputs":
                found += 1
                if node.args.kwarg is not None:
                    problems.append(f"{path.name}:{node.lineno} validate_inputs takes **{node.args.kwarg.arg}")
    assert found >= 8 and problems == []
