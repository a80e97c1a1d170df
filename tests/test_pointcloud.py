"""Depth to point clouds: conversion of depth kinds, discontinuities, intrinsics, preview files."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import torch

from recapture import synthetic
from recapture.geometry import intrinsics_from_fov, unproject
from recapture.pointcloud import depth_to_metric, make_point_cloud, remove_depth_edges
from recapture.pointcloud_files import point_cloud_preview_points, write_glb_points, write_ply


def test_intrinsics_from_fov():
    k = intrinsics_from_fov(90.0, 576, 1024)
    assert k[0, 0] == pytest.approx(512.0) and k[1, 1] == pytest.approx(512.0)
    assert (k[0, 2], k[1, 2]) == (511.5, 287.5)
    for bad in (0.5, 180.0):
        with pytest.raises(ValueError, match="fov_deg must be between 1 and 179"):
            intrinsics_from_fov(bad, 8, 8)


def test_unprojection_puts_the_image_edge_at_half_the_fov():
    k = intrinsics_from_fov(60.0, 9, 11)[None]
    points = unproject(torch.full((1, 9, 11), 3.0), k)[0]
    edge = (points[4, -1, 0] + (points[4, -1, 0] - points[4, -2, 0]) / 2) / 3.0  # right image edge, x / z
    assert edge == pytest.approx(math.tan(math.radians(30)), rel=1e-5)
    assert points[4, 5].tolist() == pytest.approx([0.0, 0.0, 3.0])


def test_inverse_depth_is_normalised_over_the_clip():
    # two frames with different disparity ranges; per-frame normalisation would stretch both to near..far
    disparity = torch.stack([torch.full((2, 2), 1.0), torch.full((2, 2), 0.5)])
    disparity[0, 0, 0] = 0.75
    disparity[1, 0, 0] = 0.0
    z = depth_to_metric(disparity, "inverse", near=1.0, far=4.0)
    assert z[0, 1, 1] == pytest.approx(1.0) and z[1, 0, 0] == pytest.approx(4.0)
    assert z[1, 1, 1] == pytest.approx(1 / (0.25 + 0.5 * 0.75))  # midway in inverse depth
    assert z[0, 0, 0] == pytest.approx(1 / (0.25 + 0.75 * 0.75))
    rel = depth_to_metric(torch.tensor([[[0.0, 1.0]], [[0.5, 0.5]]]), "relative", near=2.0, far=6.0)
    assert rel.flatten().tolist() == pytest.approx([2.0, 6.0, 4.0, 4.0])


def test_invalid_depth_values_are_dropped_and_all_invalid_is_an_error():
    depth = torch.tensor([[[1.0, float("nan"), -2.0, 0.0, float("inf"), 3.0]]])
    z = depth_to_metric(depth, "metric")
    assert z.flatten().tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 3.0]
    with pytest.raises(ValueError, match="no valid value"):
        depth_to_metric(torch.full((1, 2, 2), float("nan")), "inverse")
    with pytest.raises(ValueError, match="0 < near < far"):
        depth_to_metric(torch.rand(1, 2, 2), "inverse", near=5, far=1)
    with pytest.raises(ValueError, match="unknown depth kind"):
        depth_to_metric(torch.rand(1, 2, 2), "disparity")


def test_edges_of_objects_are_removed_but_slanted_planes_kept():
    clip = synthetic.source_clip(1, 72, 128, motion=False)
    depth = clip.depth
    cleaned = remove_depth_edges(depth, 0.04)
    removed = (cleaned == 0) & (depth > 0)
    # the card (z = 3) in front of the wall (z = 6): both sides of its silhouette go
    row = 36
    card_cols = ((depth[0, row] - 3.0).abs() < 1e-3).nonzero().flatten()
    left = int(card_cols.min())
    assert removed[0, row, left] and removed[0, row, left - 1]
    # the wall and the card interiors, and the slanted panel's interior, stay
    assert not removed[0, row, left + 3 : int(card_cols.max()) - 2].any()
    assert not removed[0, 5:20, 5:20].any()
    panel = (depth[0] > 2.4) & (depth[0] < 3.0) & ~removed[0]
    assert panel.sum() > 100
    assert remove_depth_edges(depth, 0.0) is depth


def test_make_point_cloud_checks_the_inputs():
    frames = torch.rand(3, 8, 12, 3)
    cloud = make_point_cloud(frames, torch.rand(3, 8, 12) + 0.1, kind="inverse", fov_deg=70, edge_threshold=0)
    assert cloud.depth.shape == (3, 8, 12) and cloud.intrinsics.shape == (3, 3, 3) and not cloud.metric
    assert (cloud.depth >= 1.0 - 1e-5).all() and (cloud.depth <= 10.0 + 1e-4).all()
    with pytest.raises(ValueError, match="3 frames but 2 depth maps"):
        make_point_cloud(frames, torch.rand(2, 8, 12), kind="metric")
    with pytest.raises(ValueError, match="frames are 12x8 but the depth is 6x4"):
        make_point_cloud(frames, torch.rand(3, 4, 6), kind="metric")
    bad = frames.clone()
    bad[1, 2, 3, 0], bad[2, 0, 0, 1] = math.nan, math.inf
    with pytest.raises(ValueError, match="the frames have 2 NaN or infinite values"):  # not NaN-coloured points
        make_point_cloud(bad, torch.rand(3, 8, 12) + 0.1, kind="inverse")


def test_preview_files_parse_back(tmp_path):
    clip = synthetic.source_clip(1, 36, 64, motion=False)
    cloud = make_point_cloud(clip.frames, clip.depth, kind="metric")
    points, colors = point_cloud_preview_points(cloud, max_points=500)
    assert 250 <= len(points) <= 500 and points.shape[1] == 3
    write_ply(tmp_path / "a.ply", points, colors)
    raw = (tmp_path / "a.ply").read_bytes()
    header, body = raw.split(b"end_header\n")
    assert f"element vertex {len(points)}".encode() in header
    data = np.frombuffer(body, dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3)])
    np.testing.assert_allclose(data["xyz"], points)
    np.testing.assert_array_equal(data["rgb"], (colors * 255 + 0.5).astype(np.uint8))

    write_glb_points(tmp_path / "a.glb", points, colors)
    glb = (tmp_path / "a.glb").read_bytes()
    magic, version, length = struct.unpack("<III", glb[:12])
    assert (magic, version, length) == (0x46546C67, 2, len(glb))
    json_len, kind = struct.unpack("<II", glb[12:20])
    gltf = json.loads(glb[20 : 20 + json_len])
    assert kind == 0x4E4F534A and gltf["meshes"][0]["primitives"][0]["mode"] == 0
    position = gltf["accessors"][0]
    assert position["count"] == len(points)
    flipped = points * np.array([1, -1, -1])
    np.testing.assert_allclose(position["min"], flipped.min(0), rtol=1e-6)
    np.testing.assert_allclose(position["max"], flipped.max(0), rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.glb", "a.ply"]
