"""Clips longer than SVD's window: overlapping windows, fused at every denoising step.

SVD sees ``window`` frames at a time (14 for svd, 25 for svd_xt). A longer clip is covered by windows
that start every ``window - overlap`` frames, the last one ending at the clip's end. At each step every
window is denoised with its own image prompt (the anchor frame it starts at) and the results are
averaged frame by frame with trapezoid weights that fall off over the overlap, so neighbouring windows
hand over smoothly instead of meeting at a seam (as context-window schedulers do). Training picks one
of the same windows at each step.
"""

from __future__ import annotations

import torch


def window_starts(num_frames: int, window: int, overlap: int) -> list[int]:
    """First frames of the windows covering ``num_frames`` frames; an ``overlap`` of the whole window or
    more counts as ``window - 1``.

    >>> window_starts(14, 14, 4), window_starts(10, 14, 4)
    ([0], [0])
    >>> window_starts(30, 14, 4)
    [0, 10, 16]
    """
    if num_frames <= window:
        return [0]
    if overlap < 0:
        raise ValueError(f"the window overlap must be 0 frames or more, got {overlap}")
    overlap = min(overlap, window - 1)  # windows must advance: a short window shares at most all but one frame
    starts = list(range(0, num_frames - window, window - overlap))
    return starts + [num_frames - window]


def window_weights(window: int, overlap: int) -> torch.Tensor:
    """``(window,)`` trapezoid weights: 1 inside, ``1/(overlap+1)`` .. ``overlap/(overlap+1)`` over the
    ``overlap`` frames at each end.

    >>> (window_weights(6, 2) * 3).round().tolist()
    [1.0, 2.0, 3.0, 3.0, 2.0, 1.0]
    """
    k = torch.arange(window, dtype=torch.float32)
    return torch.minimum(torch.minimum(k + 1, window - k), torch.tensor(overlap + 1.0)) / (overlap + 1)


def fuse(parts: list[torch.Tensor], starts: list[int], num_frames: int, overlap: int) -> torch.Tensor:
    """Windows' results ``(B, window, ...)`` -> the clip's ``(B, num_frames, ...)``: a weighted average
    where windows overlap (``window_weights``); a single window is returned as it is."""
    if len(parts) == 1:
        return parts[0]
    window = parts[0].shape[1]
    shape = (parts[0].shape[0], num_frames, *parts[0].shape[2:])
    total, weight = parts[0].new_zeros(shape), parts[0].new_zeros((1, num_frames) + (1,) * (len(shape) - 2))
    w = window_weights(window, min(overlap, window - 1)).to(parts[0]).view(1, window, *(1,) * (len(shape) - 2))
    for part, start in zip(parts, starts):
        total[:, start : start + window] += w * part
        weight[:, start : start + window] += w
    return total / weight
