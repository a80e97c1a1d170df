"""One home per setting: the nodes' inputs and the command line's options take their defaults, ranges and
help from ``recapture.config``; and the small public geometry functions' doctests hold."""

from __future__ import annotations

import doctest
from dataclasses import fields

import pytest

from recapture import config, geometry, sampling, train
from recapture.video import ALL_FRAMES
from recapture.cli import CAMERA_FLAGS, CLIP_FLAGS, POINT_CLOUD_FLAGS, SAMPLE_FLAGS, SHARED_FLAGS, TRAIN_FLAGS, build_parser
from recapture.config import (FROM_LORA, MEMORY_PLANS, CameraConfig, ClipConfig, PointCloudConfig, RenderConfig,
                              SampleConfig, TrainConfig, memory_plan, setting_of)

# node -> {input: (config class, field)}: every node input that is a setting of the method
NODE_SETTINGS = {
    "ReCaptureLoadVideo": {name: (ClipConfig, name) for name in ("start_frame", "frame_count", "every_nth", "width",
                                                                 "height", "resize")},
    "ReCaptureDepthToPointCloud": {name: (PointCloudConfig, name) for name in ("near", "far", "fov_deg", "edge_threshold",
                                                                               "align_depth")},
    "ReCaptureCameraTrajectory": {name: (CameraConfig, name) for name in ("preset", "amount", "easing", "frames",
                                                                          "pivot_distance")},
    "ReCaptureRenderAnchor": {"dilate_holes": (RenderConfig, "dilate_holes")},
    "ReCaptureTrainMaskedLoRA": {name: (TrainConfig, name) for name in (
        "steps", "learning_rate", "rank", "seed", "conditioning_frame", "fps", "motion_bucket_id", "noise_aug_strength",
        "mask_erosion", "spatial_augment", "window_overlap")},
    "ReCaptureSVDDualLoRASample": {name: (SampleConfig, name) for name in (
        "steps", "seed", "min_guidance", "max_guidance", "fps", "motion_bucket_id", "noise_aug_strength",
        "temporal_strength", "spatial_strength", "decode_chunk_size", "window_overlap")},
    "ReCaptureSDEditRefine": {"strength": (SampleConfig, "refine_strength")} | {name: (SampleConfig, name) for name in (
        "steps", "seed", "decode_chunk_size", "min_guidance", "max_guidance", "fps", "motion_bucket_id",
        "noise_aug_strength", "window_overlap")},
}
SAMPLING_NODES = ("ReCaptureSVDDualLoRASample", "ReCaptureSDEditRefine")


@pytest.mark.parametrize("module, examples", [(geometry, 6), (config, 2), (sampling, 1), (train, 1)])
def test_doctests_of_the_small_public_functions(module, examples):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= examples and result.failed == 0


def test_training_and_sampling_share_svd_conditioning_defaults():
    """One value of fps / motion bucket / noise augmentation must serve both (the CLI has one flag each)."""
    for name in SHARED_FLAGS:
        assert setting_of(TrainConfig, name).default == setting_of(SampleConfig, name).default, name
        assert getattr(TrainConfig(), name) == getattr(SampleConfig(), name), name


def test_every_setting_has_a_range_inside_which_its_default_lies():
    for cls in (ClipConfig, PointCloudConfig, CameraConfig, RenderConfig, TrainConfig, SampleConfig):
        for f in fields(cls):
            if "setting" not in f.metadata:
                continue
            s = f.metadata["setting"]
            assert s.help and s.default == f.default, f.name
            if s.choices:
                assert s.default in s.choices, f.name
            elif isinstance(s.default, bool):
                assert s.min is None and s.max is None, f.name
            else:
                assert s.min <= s.default <= s.max, f.name
    assert memory_plan(TrainConfig.memory) is MEMORY_PLANS["balanced"]
    with pytest.raises(ValueError, match="unknown memory plan 'huge'"):
        memory_plan("huge")


def test_anchor_command_line_defaults_are_the_configs():
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["anchor"]
    options = {a.option_strings[0]: a for a in sub._actions if a.option_strings}
    for cls, table in ((ClipConfig, CLIP_FLAGS), (PointCloudConfig, POINT_CLOUD_FLAGS), (CameraConfig, CAMERA_FLAGS),
                       (RenderConfig, {"dilate_holes": "--dilate-holes"})):
        for name, flag in table.items():
            if flag != "--frames":  # the command line takes the whole clip unless told (issue 18)
                assert options[flag].default == setting_of(cls, name).default, flag
    assert options["--frames"].default == ALL_FRAMES
    assert list(options["--easing"].choices) == list(setting_of(CameraConfig, "easing").choices)
    assert list(options["--depth-kind"].choices) == list(setting_of(PointCloudConfig, "depth_kind").choices)


@pytest.mark.parametrize("command", ["train", "sample", "run"])
def test_command_line_defaults_are_the_configs(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    options = {a.option_strings[0]: a for a in sub._actions if a.option_strings}
    flags = {"train": [(TrainConfig, TRAIN_FLAGS)], "sample": [(SampleConfig, SAMPLE_FLAGS)],
             "run": [(TrainConfig, TRAIN_FLAGS), (SampleConfig, SAMPLE_FLAGS)]}[command]
    for cls, table in flags + [(TrainConfig, SHARED_FLAGS)]:
        for name, flag in table.items():
            if command == "sample" and name in FROM_LORA:  # left out: the LoRA's
                assert options[flag].default is None and "the LoRA's" in options[flag].help, flag
            else:
                assert options[flag].default == setting_of(cls, name).default, flag
    assert "--low-memory" in options and options["--low-memory"].default is False


def test_command_line_refuses_a_setting_outside_its_range(capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["sample", "--anchor", "a.npz", "--lora-temporal", "t", "--lora-spatial", "s",
                                   "--svd", "m", "--out", "o", "--decode-chunk-size", "0"])
    assert stop.value.code == 2
    assert "--decode-chunk-size: 0 is outside 1..64" in capsys.readouterr().err


@pytest.mark.comfy
def test_node_inputs_are_the_configs(comfy):
    info = comfy.object_info()
    for node, inputs in NODE_SETTINGS.items():
        spec = info[node]["input"]
        every = spec.get("required", {}) | spec.get("optional", {})
        for name, (cls, field_name) in inputs.items():
            s = setting_of(cls, field_name)
            options = every[name][1]
            if node in SAMPLING_NODES and name in FROM_LORA:  # by default the LoRA's, below the range
                assert options["default"] == options["min"] == FROM_LORA[name], (node, name)
                assert options["max"] == s.max and options["tooltip"].startswith(s.help), (node, name)
                assert "the LoRA's own" in options["tooltip"], (node, name)
                continue
            assert options["default"] == s.default, (node, name)
            assert (options.get("min"), options.get("max")) == (s.min, s.max), (node, name)
            assert options["tooltip"] == s.help, (node, name)
        if node.startswith("ReCaptureT") or node.startswith("ReCaptureS"):  # Stage 2: one memory switch
            assert every["low_memory"][1]["default"] is False
            assert every["low_memory"][1]["tooltip"] == setting_of(cls, "memory").help, node
    assert info["ReCaptureDepthToPointCloud"]["input"]["required"]["depth_kind"][1]["default"] == \
        setting_of(PointCloudConfig, "depth_kind").default
