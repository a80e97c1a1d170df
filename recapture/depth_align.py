"""Steady depth: removing the per-frame scale and shift drift of monocular relative depth.

Per-frame depth models (Depth Anything and friends) give relative inverse depth up to an unknown scale
and shift that change from frame to frame, so a point cloud built from them breathes. Within one kind of
relative depth the drift is affine, ``x_i = a_i * truth + b_i``: each frame is brought onto one common
scale by a robust least-squares fit of ``s_i * x_i + t_i`` to a reference, on pixels that are valid and
away from depth edges; the robust weights leave out what moved. The reference is the previous aligned
frame and the first frame (a keyframe against drift); a second pass fits each frame to the median of its
aligned neighbours, which smooths the fits over time. The result is in the first frame's scale; the
point cloud's clip-wide normalisation (``depth_to_metric``) then maps it to ``near``..``far``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ALIGNED_KINDS = ("inverse", "relative")  # metric depth has no per-frame scale/shift to remove


def edge_free(depth: torch.Tensor, threshold: float = 0.05) -> torch.Tensor:
    """Pixels away from depth edges: ``(N, H, W)`` bool, False where a 4-neighbour differs by more than
    ``threshold`` of the frame's spread (its 2nd-98th percentile range) or the value is not finite."""
    finite = torch.isfinite(depth)
    x = torch.where(finite, depth, torch.zeros_like(depth))
    spread = torch.stack([_spread(frame[ok]) for frame, ok in zip(x, finite)]).view(-1, 1, 1)
    jump = torch.zeros_like(x)
    jump[:, 1:] = torch.maximum(jump[:, 1:], (x[:, 1:] - x[:, :-1]).abs())
    jump[:, :-1] = torch.maximum(jump[:, :-1], (x[:, 1:] - x[:, :-1]).abs())
    jump[:, :, 1:] = torch.maximum(jump[:, :, 1:], (x[:, :, 1:] - x[:, :, :-1]).abs())
    jump[:, :, :-1] = torch.maximum(jump[:, :, :-1], (x[:, :, 1:] - x[:, :, :-1]).abs())
    near_edge = F.max_pool2d((jump > threshold * spread).float()[:, None], 3, 1, 1)[:, 0] > 0
    return finite & ~near_edge


def _spread(values: torch.Tensor) -> torch.Tensor:
    if values.numel() < 2:
        return torch.tensor(1.0)
    q = torch.quantile(values[:: max(1, values.numel() // 100_000)].float(), torch.tensor([0.02, 0.98]))
    return (q[1] - q[0]).clamp_min(1e-12)


def robust_affine(x: torch.Tensor, target: torch.Tensor, iterations: int = 10) -> tuple[float, float]:
    """``(s, t)`` minimising a robust (Cauchy) loss of ``s * x + t - target`` over the given samples.

    Iteratively reweighted least squares from the plain least-squares fit; the residual scale is the
    median absolute residual, so samples that do not follow the others (moving objects, new content)
    stop counting.

    Args:
        x, target: ``(M,)`` samples.
    """
    x, target = x.double(), target.double()
    weights = torch.ones_like(x)
    s, t = 1.0, 0.0
    for _ in range(iterations + 1):
        w = weights / weights.sum()
        mx, mt = (w * x).sum(), (w * target).sum()
        var = (w * (x - mx) ** 2).sum()
        if var <= 0:
            break
        s = float((w * (x - mx) * (target - mt)).sum() / var)
        t = float(mt - s * mx)
        residual = s * x + t - target
        scale = 2.385 * residual.abs().median().clamp_min(1e-12)  # Cauchy's constant for a MAD-based scale
        weights = 1.0 / (1.0 + (residual / scale) ** 2)
    return s, t


def align_depth(depth: torch.Tensor, kind: str, window: int = 2, edge_threshold: float = 0.05,
                max_samples: int = 200_000) -> torch.Tensor:
    """Removes the per-frame scale and shift drift of a clip's relative depth (see the module docstring).

    Args:
        depth: ``(N, H, W)`` raw depth of one kind for the whole clip.
        kind: ``inverse`` or ``relative`` (aligned in that space, where the drift is affine); ``metric``
            is returned as it is.
        window: frames on each side whose aligned median a frame is fitted to in the smoothing pass.
        edge_threshold: see ``edge_free``.
        max_samples: pixels per fit at most (evenly strided), to keep long high-resolution clips fast.

    Returns:
        ``(N, H, W)`` float32 depth of the same kind, in the first frame's scale; pixels that were not
        finite stay as they were.
    """
    if kind == "metric":
        return depth
    if kind not in ALIGNED_KINDS:
        raise ValueError(f"unknown depth kind {kind!r}: use one of inverse, relative, metric")
    if depth.ndim != 3:
        raise ValueError(f"depth must be (frames, height, width), got {tuple(depth.shape)}")
    x = depth.float()
    usable = edge_free(x, edge_threshold)
    stride = max(1, usable[0].numel() // max_samples)
    aligned = x.clone()

    def fit(i: int, references: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Frame ``i`` onto the (reference values, usable pixels) pairs, where they and it are usable."""
        values, targets = [], []
        for reference, ok in references:
            pick = (usable[i] & ok).flatten()[::stride]
            values.append(x[i].flatten()[::stride][pick])
            targets.append(reference.flatten()[::stride][pick])
        values, targets = torch.cat(values), torch.cat(targets)
        if len(values) < 16:
            return  # too little in common: the frame keeps its values
        s, t = robust_affine(values, targets)
        if s > 0 and math.isfinite(s) and math.isfinite(t):
            aligned[i] = s * x[i] + t

    # 1. Each frame onto the previous aligned frame and the first one (the keyframe against drift).
    for i in range(1, len(x)):
        fit(i, [(aligned[i - 1], usable[i - 1]), (aligned[0], usable[0])])
    # 2. Smoothing over time: each frame onto the median of its aligned neighbours.
    if window > 0 and len(x) > 2:
        first = aligned.clone()
        for i in range(len(x)):
            around = [j for j in range(max(0, i - window), min(len(x), i + window + 1)) if j != i]
            fit(i, [(first[around].median(dim=0).values, usable[around].all(dim=0))])
    return torch.where(torch.isfinite(depth), aligned, depth.float())
