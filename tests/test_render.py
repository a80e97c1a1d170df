"""Anchor rendering against ray-traced ground truth."""

from __future__ import annotations

import math
import threading

import pytest
import torch
import torch.nn.functional as F

from recapture import camera, render, synthetic
from recapture.geometry import intrinsics_from_fov, unproject
from recapture.pointcloud import depth_edges, make_point_cloud
from recapture.render import render_anchor
from recapture.types import CameraPath, PointCloud

H, W = 144, 256


@pytest.fixture(scope="module")
def scene_cloud():
    clip = synthetic.source_clip(1, H, W, motion=False)
    cloud = make_point_cloud(clip.frames, clip.depth, kind="metric", edge_threshold=0)
    return clip, cloud, synthetic.scene_at(0.0)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean()))


def compare(scene_cloud, pose: torch.Tensor, fov: float = math.nan):
    """Renders one new view and returns (all valid PSNR, PSNR away from silhouettes, mask IoU, valid fraction)."""
    clip, cloud, scene = scene_cloud
    anchor, mask = render_anchor(cloud, CameraPath(poses=pose[None], fov_deg=torch.tensor([fov])))
    k_new = clip.intrinsics.clone()
    if not math.isnan(fov):
        k_new[0, 0] = k_new[1, 1] = W / (2 * math.tan(math.radians(fov) / 2))
    truth, visible = synthetic.visible_from_source(scene, torch.eye(4), clip.intrinsics, pose, k_new, H, W)
    _, true_depth, _ = synthetic.render_scene(scene, pose, k_new, H, W)
    # a 1-pixel band on each side of true depth discontinuities, where the edge falls inside a pixel
    band = F.max_pool2d(depth_edges(true_depth[None], 0.02)[None].float(), 3, 1, 1)[0, 0] > 0
    valid = mask[0] > 0
    both = valid & visible
    iou = float((valid & visible).sum() / (valid | visible).sum())
    return (psnr(anchor[0][both], truth[both]), psnr(anchor[0][both & ~band], truth[both & ~band]), iou,
            float(valid.float().mean()))


def test_identity_path_reproduces_the_source_exactly(scene_cloud):
    clip, cloud, _ = scene_cloud
    anchor, mask = render_anchor(cloud, camera.preset_path("static", 1, 0.0))
    assert mask.min() == 1.0
    torch.testing.assert_close(anchor[0], clip.frames[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, pose_fn, fov, min_valid, max_valid", [
    ("orbit 12 deg around the card", lambda: camera.preset_path("orbit_left", 2, 12, pivot_distance=3.0).poses[-1],
     math.nan, 0.6, 0.9),
    ("orbit up 8 deg", lambda: camera.preset_path("orbit_up", 2, 8, pivot_distance=3.0).poses[-1], math.nan, 0.6, 0.98),
    ("truck right", lambda: camera.preset_path("truck_right", 2, 15, pivot_distance=3.0).poses[-1],
     math.nan, 0.6, 0.95),
    ("pedestal up", lambda: camera.preset_path("pedestal_up", 2, 10, pivot_distance=3.0).poses[-1],
     math.nan, 0.6, 0.99),
    ("strong dolly in", lambda: camera.preset_path("dolly_in", 2, 35, pivot_distance=6.0).poses[-1],
     math.nan, 0.99, 1.0),
    ("zoom x2", lambda: torch.eye(4), 32.2, 0.99, 1.0),
])
def test_anchor_matches_ray_traced_ground_truth(scene_cloud, name, pose_fn, fov, min_valid, max_valid):
    all_valid, interior, iou, valid = compare(scene_cloud, pose_fn(), fov)
    assert all_valid > 30.0, name
    assert interior > 36.0, name
    assert iou > 0.97, name
    assert min_valid <= valid <= max_valid, name  # the move really opened holes (or, moving in, none)


def naive_splat_coverage(cloud: PointCloud, pose: torch.Tensor) -> float:
    """Coverage of one-pixel nearest splatting, the peers' common renderer without footprints."""
    points = unproject(cloud.depth, cloud.intrinsics)[0].reshape(-1, 3)
    inv = torch.linalg.inv(pose)
    p = points @ inv[:3, :3].T + inv[:3, 3]
    k = cloud.intrinsics[0]
    u = (k[0, 0] * p[:, 0] / p[:, 2] + k[0, 2]).round().long()
    v = (k[1, 1] * p[:, 1] / p[:, 2] + k[1, 2]).round().long()
    ok = (u >= 0) & (u < W) & (v >= 0) & (v < H) & (p[:, 2] > 0)
    hit = torch.zeros(H * W, dtype=torch.bool)
    hit[v[ok] * W + u[ok]] = True
    return float(hit.float().mean())


def test_dolly_in_does_not_crack(scene_cloud):
    """Moving 35 % of the way to the wall magnifies it 1.5x and the card 3x: one-pixel splats leave
    most pixels empty, footprints sized by magnification leave none."""
    _, cloud, _ = scene_cloud
    pose = camera.preset_path("dolly_in", 2, 35, pivot_distance=6.0).poses[-1]
    assert naive_splat_coverage(cloud, pose) < 0.6
    _, mask = render_anchor(cloud, CameraPath(poses=pose[None], fov_deg=torch.tensor([math.nan])))
    assert mask.mean() == 1.0


def test_near_points_win():
    h, w = 8, 8
    k = intrinsics_from_fov(60, h, w)[None]
    colors = torch.zeros(1, h, w, 3)
    colors[..., 2] = 1.0  # far blue wall
    depth = torch.full((1, h, w), 4.0)
    colors[:, 2:6, 2:6] = torch.tensor([1.0, 0, 0])  # near red square
    depth[:, 2:6, 2:6] = 1.0
    cloud = PointCloud(colors=colors, depth=depth, intrinsics=k)
    # a small sideways move: the red square must stay in front of the wall where they overlap
    pose = camera.preset_path("truck_right", 2, 5, pivot_distance=1.0).poses[-1]
    anchor, mask = render_anchor(cloud, CameraPath(poses=pose[None], fov_deg=torch.tensor([math.nan])))
    centre = anchor[0, 3:5, 2:4]
    assert (centre[..., 0] > 0.99).all() and (centre[..., 2] < 0.01).all()
    # NaN colours (a cloud made by other code) are refused instead of rendering a NaN anchor
    nan_cloud = PointCloud(colors=colors.clone().index_fill_(1, torch.tensor([0]), math.nan), depth=depth,
                           intrinsics=k)
    with pytest.raises(ValueError, match="colours have NaN or infinite values"):
        render_anchor(nan_cloud, CameraPath(poses=pose[None], fov_deg=torch.tensor([math.nan])))


def test_invalid_points_leave_holes_and_holes_can_grow():
    h, w = 16, 16
    depth = torch.full((1, h, w), 2.0)
    depth[:, 6:10, 6:10] = 0.0  # no depth there
    cloud = PointCloud(colors=torch.rand(1, h, w, 3), depth=depth, intrinsics=intrinsics_from_fov(60, h, w)[None])
    path = camera.preset_path("static", 1, 0.0)
    anchor, mask = render_anchor(cloud, path)
    assert mask[0, 6:10, 6:10].sum() == 0 and mask.sum() == h * w - 16
    assert anchor[0, 6:10, 6:10].abs().sum() == 0
    _, grown = render_anchor(cloud, path, dilate_holes=1)
    assert grown.sum() == h * w - 36  # the 4x4 hole became 6x6


def test_frames_are_rendered_with_their_own_cameras_in_chunks():
    clip = synthetic.source_clip(5, 36, 64)
    cloud = make_point_cloud(clip.frames, clip.depth, kind="metric", edge_threshold=0)
    path = camera.preset_path("orbit_right", 5, 10, pivot_distance=3.0)
    done = []
    anchor, mask = render_anchor(cloud, path, chunk_frames=2, on_frame=done.append)
    assert done == [2, 2, 1]
    assert anchor.shape == (5, 36, 64, 3) and mask.shape == (5, 36, 64)
    for i in range(5):  # frame by frame equals the batch
        single = PointCloud(colors=cloud.colors[i:i + 1], depth=cloud.depth[i:i + 1], intrinsics=cloud.intrinsics[i:i + 1])
        a, m = render_anchor(single, CameraPath(poses=path.poses[i:i + 1], fov_deg=path.fov_deg[i:i + 1]))
        torch.testing.assert_close(a[0], anchor[i])
        torch.testing.assert_close(m[0], mask[i])
    assert mask[0].mean() == 1.0 and mask[-1].mean() < 0.95


def test_two_cpu_workers_give_the_frames_of_one_in_order(monkeypatch):
    clip = synthetic.source_clip(6, 36, 64)
    cloud = make_point_cloud(clip.frames, clip.depth, kind="metric", edge_threshold=0)
    path = camera.preset_path("orbit_left", 6, 12, pivot_distance=3.0)
    monkeypatch.setattr(render, "CPU_WORKERS", 1)
    one = render_anchor(cloud, path)
    monkeypatch.setattr(render, "CPU_WORKERS", 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # also where the test machine has one core
    done = []
    two = render_anchor(cloud, path, on_frame=done.append)
    assert done == [1] * 6
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
    with torch.inference_mode():  # as ComfyUI runs nodes: the workers get inference tensors
        inferred = render_anchor(make_point_cloud(clip.frames, clip.depth, kind="metric", edge_threshold=0), path)
    assert torch.equal(inferred[0], one[0])
    assert not any(t.name.startswith("recapture-render") for t in threading.enumerate())  # workers gone


def test_cancel_stops_the_cpu_workers_within_a_frame(monkeypatch):
    clip = synthetic.source_clip(2, 36, 64)
    cloud = make_point_cloud(clip.frames.repeat(10, 1, 1, 1), clip.depth.repeat(10, 1, 1), kind="metric")
    path = camera.preset_path("orbit_left", 20, 12, pivot_distance=3.0)
    rendered = []
    chunk = render._render_chunk
    monkeypatch.setattr(render, "_render_chunk", lambda *a: rendered.append(1) or chunk(*a))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)

    def cancel(frames):
        raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError):
        render_anchor(cloud, path, on_frame=cancel)
    assert len(rendered) <= 1 + render.CPU_WORKERS  # the first frame, and at most the ones under way
    assert not any(t.name.startswith("recapture-render") for t in threading.enumerate())


def test_reproject_equals_unprojection_rigid_transform_and_kornia_projection():
    from kornia.geometry.camera import project_points
    from kornia.geometry.conversions import axis_angle_to_rotation_matrix

    g = torch.Generator().manual_seed(0)
    b, h, w = 3, 20, 32
    depth = torch.rand(b, h, w, generator=g) * 4 + 0.5
    depth[:, 0, :5] = 0.0  # no depth: not a point
    k = torch.zeros(b, 3, 3)
    k[:, 0, 0], k[:, 1, 1] = torch.tensor([30.0, 45.0, 60.0]), torch.tensor([32.0, 40.0, 66.0])
    k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = torch.tensor([15.5, 10.0, 17.0]), torch.tensor([9.5, 12.0, 8.0]), 1.0
    k_new = k.clone()
    k_new[:, 0, 0] *= 1.3
    to_new = torch.eye(4).repeat(b, 1, 1)
    to_new[:, :3, :3] = axis_angle_to_rotation_matrix(torch.randn(b, 3, generator=g) * 0.15)
    to_new[:, :3, 3] = torch.randn(b, 3, generator=g) * 0.2
    to_new[2, 2, 3] = -3.0  # the last camera moves past part of the scene: points behind it
    u, v, z, valid = render.reproject(depth, k, k_new, to_new)

    points = unproject(depth, k).reshape(b, -1, 3) @ to_new[:, :3, :3].transpose(1, 2) + to_new[:, None, :3, 3]
    truth_valid = (depth.reshape(b, -1) > 0) & (points[..., 2] > 1e-6)
    assert torch.equal(valid.reshape(b, -1), truth_valid)
    assert 0 < truth_valid[2].float().mean() < 1 and truth_valid[:2].float().mean() > 0.95
    uv = project_points(points, k_new[:, None])
    torch.testing.assert_close(u.reshape(b, -1)[truth_valid], uv[..., 0][truth_valid], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(v.reshape(b, -1)[truth_valid], uv[..., 1][truth_valid], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(z.reshape(b, -1)[truth_valid], points[..., 2][truth_valid], atol=1e-5, rtol=1e-5)
    assert (z.reshape(b, -1)[~truth_valid] == 1.0).all() and torch.isfinite(u).all() and torch.isfinite(v).all()


def test_path_and_cloud_must_agree_on_frames():
    clip = synthetic.source_clip(2, 8, 8)
    cloud = make_point_cloud(clip.frames, clip.depth, kind="metric")
    with pytest.raises(ValueError, match="camera path has 3 frames but the point cloud has 2"):
        render_anchor(cloud, camera.preset_path("static", 3, 0.0))
