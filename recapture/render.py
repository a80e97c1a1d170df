"""Stage 1 rendering: each frame's point cloud seen from its new camera -> anchor video + validity mask.

Forward splatting with a z-buffer, in two passes over the points of a chunk of frames:

1. every point covers its *core*, the target pixels whose centres fall inside the area its source pixel
   projects to (half-width grows with the point's magnification, so a camera moving in does not open
   cracks); the nearest depth whose core reaches each pixel is kept (``scatter_reduce`` with
   ``amin``). A pixel is valid where some core reaches it.
2. every point also spreads a tent filter over a slightly wider footprint; at each valid pixel the
   points whose depth is within a small relative tolerance of the nearest depth are blended with those
   weights, the others (hidden surfaces, and foreground tails spilling over a silhouette) are not.

Everything is batched torch on the cloud's device (CPU, CUDA or MPS), float32.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import torch

from .config import RenderConfig
from .geometry import focal_from_fov, invert_rigid
from .types import CameraPath, PointCloud

# Points with a footprint above this many pixels per side crack (a zoom beyond ~x12 into the source).
MAX_FOOTPRINT = 16
# The core's half-width relative to the point spacing: over 1/2 so neighbouring cores overlap even
# where a surface seen at an angle spreads its points wider than the fronto-parallel estimate.
CORE_MARGIN = 0.625
# Chunks rendered at once on the CPU, on threads: the scatters run on one core each (docs/benchmarks.md).
CPU_WORKERS = 2


def new_intrinsics(source: torch.Tensor, fov_deg: torch.Tensor, width: int) -> torch.Tensor:
    """The new cameras' intrinsics ``(N, 3, 3)``: the source's, with the focal length of ``fov_deg``
    (horizontal, degrees) where it is not NaN; the principal point is kept."""
    focal = focal_from_fov(fov_deg.to(source), width)
    keep = torch.isnan(focal)
    k = source.clone()
    k[:, 0, 0] = torch.where(keep, source[:, 0, 0], focal)
    k[:, 1, 1] = torch.where(keep, source[:, 1, 1], focal * source[:, 1, 1] / source[:, 0, 0])
    return k


def reproject(depth: torch.Tensor, intrinsics: torch.Tensor, k_new: torch.Tensor, to_new: torch.Tensor):
    """Where each source pixel lands in its new view: ``u, v`` (pixels), depth ``z`` and whether it exists
    there (depth > 0 and in front of the camera), each ``(B, H, W)``; points that do not exist get ``z = 1``
    so that all values stay finite.

    The same maths as ``recapture.geometry.unproject``, the rigid transform and kornia's pinhole
    projection (a test holds them equal), arranged for speed: the point of pixel ``(col, row)`` at
    z-depth ``d`` is ``d (R[:, 0] x + R[:, 1] y + R[:, 2]) + t`` with ``x = (col - cx) / fx`` a function
    of the column only and ``y = (row - cy) / fy`` of the row only, so each coordinate is one broadcast
    sum and one multiply-add over the image (one 576x1024 frame on 2 CPU cores: 1.1 ms instead of 8-10).

    Args:
        depth: ``(B, H, W)`` source z-depth. intrinsics, k_new: ``(B, 3, 3)`` source and new cameras.
        to_new: ``(B, 4, 4)`` rigid transform from the source camera's frame to the new camera's.
    """
    b, h, w = depth.shape
    k, k_new = intrinsics.view(b, 3, 3, 1, 1), k_new.view(b, 3, 3, 1, 1)  # entries broadcast over (H, W)
    r, t = to_new[:, :3, :3].reshape(b, 3, 3, 1, 1), to_new[:, :3, 3].reshape(b, 3, 1, 1)
    x = (torch.arange(w, device=depth.device, dtype=depth.dtype).view(1, w) - k[:, 0, 2]) / k[:, 0, 0]  # (B, 1, W)
    y = (torch.arange(h, device=depth.device, dtype=depth.dtype).view(h, 1) - k[:, 1, 2]) / k[:, 1, 1]  # (B, H, 1)
    px, py, pz = (torch.addcmul(t[:, i], depth, r[:, i, 0] * x + (r[:, i, 1] * y + r[:, i, 2])) for i in range(3))
    valid = (depth > 0) & (pz > 1e-6)
    z = pz.masked_fill_(~valid, 1.0)
    u = torch.addcmul(k_new[:, 0, 2], px.div_(z), k_new[:, 0, 0])
    v = torch.addcmul(k_new[:, 1, 2], py.div_(z), k_new[:, 1, 1])
    return u, v, z, valid


def core_half_widths(magnification: torch.Tensor) -> torch.Tensor:
    """Half-width (pixels) of each point's core; at least 0.55 so that a point covers the pixel it
    falls in even when the camera moves away."""
    return (CORE_MARGIN * magnification).clamp_min(0.55)


def footprint_sides(core: torch.Tensor) -> torch.Tensor:
    """Footprint side (pixels) for each point: 2 (bilinear) while the core fits, else just wider than
    the core."""
    sides = torch.where(core < 1.0, torch.full_like(core, 2.0), torch.ceil(2.0 * core) + 1.0)
    return sides.clamp(max=MAX_FOOTPRINT).to(torch.int64)


def _splat(u, v, z, core, valid, base, side: int, width: int, height: int):
    """Footprint entries of points that share one footprint side, as dense ``(side * side, P)`` arrays.

    Entries that fall outside the image or belong to invalid points are clamped onto the image with
    weight 0 and depth ``inf``, so they change nothing and no boolean compaction is needed. Every test
    and weight is worked out per axis on ``(side, P)`` arrays and combined once; the points are the
    last, contiguous axis so that the elementwise work vectorises on the CPU (with the footprint last,
    its 2-4 wide rows made it several times slower).

    Args:
        u, v, z, core, valid: ``(P,)`` per point: pixel position in its new view, depth there, core
            half-width, whether it exists.
        base: ``(P,)`` index of the first pixel of the point's frame in the chunk.

    Returns:
        pixel index, tent weight, and the depth the entry offers the z-buffer (``inf`` outside the core).
    """
    half = side / 2.0
    steps = torch.arange(side, device=u.device, dtype=u.dtype)[:, None]
    px = torch.floor(u - half) + 1.0 + steps  # (side, P) columns
    py = torch.floor(v - half) + 1.0 + steps  # (side, P) rows
    dx, dy = (px - u).abs_(), (py - v).abs_()
    col, row = px.clamp(0, width - 1), py.clamp(0, height - 1)
    in_x, in_y = col == px, (row == py) & valid
    wx = (1.0 - dx / half).clamp_min_(0.0).masked_fill_(~in_x, 0.0)
    wy = (1.0 - dy / half).clamp_min_(0.0).masked_fill_(~in_y, 0.0)
    in_core = ((dy < core) & in_y)[:, None] & ((dx < core) & in_x)[None]
    # (side rows, side columns, P), in int32 and widened once for the scatters
    pixel = (row.to(torch.int32) * width + base)[:, None] + col.to(torch.int32)[None]
    weight = wy[:, None] * wx[None]
    z_core = z / in_core.float()  # z > 0: inf outside the core
    return pixel.reshape(-1, len(u)).long(), weight.reshape(-1, len(u)), z_core.reshape(-1, len(u))


def _render_chunk(colors, depth, intrinsics, poses, fov_deg, depth_tolerance):
    b, h, w = depth.shape
    n = b * h * w
    k_new = new_intrinsics(intrinsics, fov_deg, w)
    to_new = invert_rigid(poses)
    u, v, z, valid = reproject(depth, intrinsics, k_new, to_new)
    magnification = depth / z * (k_new[:, 0, 0] / intrinsics[:, 0, 0]).view(b, 1, 1)
    core = core_half_widths(magnification)
    base = (torch.arange(b, device=depth.device, dtype=torch.int32) * (h * w))[:, None].expand(b, h * w).reshape(-1)
    u, v, z, core, valid = u.reshape(-1), v.reshape(-1), z.reshape(-1), core.reshape(-1), valid.reshape(-1)
    # (r, g, b, 1) per point, channels first like the footprint arrays; the 1 sums the weights
    color = torch.cat([colors.reshape(-1, 3).T, torch.ones(1, n, device=depth.device)])
    sides = footprint_sides(core)

    groups = []  # (index of the points or None for all, their pixels, weights, core depths)
    # the range of sides in use (two reductions: cheaper than sorting the points, on every device)
    lo, hi = int(torch.where(valid, sides, MAX_FOOTPRINT).min()), int(torch.where(valid, sides, 0).max())
    for side in range(lo, hi + 1):
        index = None if lo == hi else ((sides == side) & valid).nonzero().squeeze(1)
        if index is not None and not len(index):
            continue
        take = (lambda x: x) if index is None else (lambda x, i=index: x[..., i])
        groups.append((take, *_splat(take(u), take(v), take(z), take(core), take(valid), take(base), side, w, h)))

    # pass 1: the nearest core at each pixel
    nearest = torch.full((n,), math.inf, device=depth.device)
    for _, pixel, _, z_core in groups:
        nearest.scatter_reduce_(0, pixel.reshape(-1), z_core.reshape(-1), reduce="amin")
    # pass 2: blend the points at that depth, colour and weight summed together
    sums = torch.zeros(4, n, device=depth.device)
    for take, pixel, weight, _ in groups:
        front = nearest.index_select(0, pixel.reshape(-1)).view_as(pixel)
        hidden = (front - take(z)).abs_() > front.mul_(depth_tolerance)
        weight.masked_fill_(hidden, 0.0)
        point_color = take(color)
        # one footprint entry at a time: the (4, points) products are a quarter of the memory or less,
        # and the CPU reuses it instead of mapping fresh pages for each frame
        for entry_pixel, entry_weight in zip(pixel, weight):
            sums.index_add_(1, entry_pixel, entry_weight * point_color)
    mask = torch.isfinite(nearest)
    anchor = torch.where(mask, sums[:3] / sums[3].clamp_min(1e-12), 0.0)
    return anchor.T.reshape(b, h, w, 3), mask.reshape(b, h, w).float()


def grow_holes(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Erodes the valid region ``(N, H, W)`` by ``pixels`` (the holes grow by as much)."""
    from kornia.morphology import erosion

    if pixels <= 0:
        return mask
    kernel = torch.ones(2 * pixels + 1, 2 * pixels + 1, device=mask.device)
    return erosion(mask[:, None], kernel, border_type="geodesic")[:, 0]


def _in_order(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """``fn(item)`` for each item, in order. With ``workers`` > 1 that many calls run at once on threads,
    and no more are started than workers: closing the generator early (Cancel) drops the rest and waits
    only for the calls under way."""
    items = iter(items)
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="recapture-render") as pool:
        under_way = deque(pool.submit(fn, item) for item in itertools.islice(items, workers))
        try:
            while under_way:
                result = under_way.popleft().result()
                under_way.extend(pool.submit(fn, item) for item in itertools.islice(items, 1))
                yield result
        finally:
            for future in under_way:
                future.cancel()


def render_anchor(cloud: PointCloud, path: CameraPath, *, dilate_holes: int = RenderConfig.dilate_holes,
                  depth_tolerance: float = RenderConfig.depth_tolerance,
                  chunk_frames: int | None = None, on_frame: Callable[[int], None] | None = None,
                  device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Renders each frame's point cloud from its new camera.

    Args:
        cloud: per-frame points (``N`` frames of ``H x W``).
        path: ``N`` new cameras, each relative to its frame's source camera.
        dilate_holes: grow the holes by this many pixels (their anchor colour becomes 0).
        depth_tolerance: points within this relative depth of the nearest one at a pixel are blended.
        chunk_frames: frames rendered together (bounds memory); by default 1 on the CPU, where one
            frame's arrays stay in cache (docs/benchmarks.md), and 8 on accelerators.
        on_frame: called with the number of frames finished after each chunk (progress and cancel).
        device: where to render (default: the cloud's). Only a chunk at a time is moved there and its
            result comes back, so the device's memory does not grow with the clip's length.

    Returns:
        anchor ``(N, H, W, 3)`` in 0..1 (0 in holes) and validity mask ``(N, H, W)`` (1 = a point
        landed), on the cloud's device.
    """
    if path.num_frames != cloud.num_frames:
        raise ValueError(f"the camera path has {path.num_frames} frames but the point cloud has "
                         f"{cloud.num_frames}: use a path with one camera per frame")
    if not torch.isfinite(cloud.colors.sum()):  # one reduction: NaN and inf survive a sum
        raise ValueError("the point cloud's colours have NaN or infinite values: make it from frames in 0..1")
    home = cloud.depth.device
    device = torch.device(device) if device is not None else home
    chunk_frames = chunk_frames or (1 if device.type == "cpu" else 8)
    poses, fov = path.poses.to(device, torch.float32), path.fov_deg.to(device, torch.float32)

    def render(start: int) -> tuple[torch.Tensor, torch.Tensor]:
        part = slice(start, start + chunk_frames)
        with torch.no_grad():  # grad mode is per thread: a worker would not inherit the caller's
            anchor, mask = _render_chunk(cloud.colors[part].to(device).float(), cloud.depth[part].to(device).float(),
                                         cloud.intrinsics[part].to(device).float(), poses[part], fov[part],
                                         depth_tolerance)
            if dilate_holes > 0:
                mask = grow_holes(mask, dilate_holes)
                anchor = anchor * mask[..., None]
            return anchor.to(home), mask.to(home)

    # On the CPU two chunks are rendered at once: the scatters run on one core, so a second chunk keeps
    # another busy. Accelerators queue the work of one thread and need no help.
    workers = min(CPU_WORKERS, torch.get_num_threads()) if device.type == "cpu" else 1
    anchors, masks = [], []
    with contextlib.closing(_in_order(render, range(0, cloud.num_frames, chunk_frames), workers)) as chunks:
        for anchor, mask in chunks:
            anchors.append(anchor)
            masks.append(mask)
            if on_frame is not None:
                on_frame(anchor.shape[0])
    return torch.cat(anchors), torch.cat(masks)


def mask_overlay(anchor: torch.Tensor, mask: torch.Tensor, color: tuple[float, float, float] = (1.0, 0.15, 0.55),
                 strength: float = 0.7) -> torch.Tensor:
    """The anchor ``(N, H, W, 3)`` with its holes (``mask`` ``(N, H, W)`` = 0) painted ``color``: where
    SVD will have to invent the scene, at a glance."""
    paint = ((1.0 - mask) * strength)[..., None]
    return anchor * (1.0 - paint) + torch.tensor(color, dtype=anchor.dtype, device=anchor.device) * paint
