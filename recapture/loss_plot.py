"""The training's loss curve as a small picture (shown in the Train node and saved with its output)."""

from __future__ import annotations

import numpy as np
import torch


def loss_curve_image(losses: list[tuple[float, float]], width: int = 512, height: int = 256) -> torch.Tensor:
    """A small plot of the temporal (orange) and spatial (blue) loss over steps: ``(H, W, 3)`` in 0..1.

    Each step draws its own noise level, so single losses jump by orders of magnitude: they are drawn
    faint, with a running mean over a tenth of the steps on top (the trend to watch).
    """
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (24, 24, 28))
    draw = ImageDraw.Draw(image)
    if losses:
        logs = np.log10(np.maximum(np.asarray(losses, dtype=np.float64), 1e-8))  # (steps, 2)
        window = max(1, len(logs) // 10)
        kernel = np.ones(window) / window
        trend = np.stack([np.convolve(np.pad(logs[:, i], (window - 1, 0), mode="edge"), kernel, mode="valid")
                          for i in range(2)], axis=1)
        lo, hi = float(logs.min()), float(logs.max())
        span = max(hi - lo, 1e-6)

        def line(values, color, thickness):
            points = [(8 + (width - 16) * i / max(1, len(values) - 1), height - 20 - (height - 40) * (v - lo) / span)
                      for i, v in enumerate(values)]
            draw.line(points if len(points) > 1 else points * 2, fill=color, width=thickness)

        for index, color, faint in ((0, (255, 150, 60), (90, 62, 40)), (1, (90, 160, 255), (45, 65, 95))):
            line(logs[:, index], faint, 1)
        for index, color in ((0, (255, 150, 60)), (1, (90, 160, 255))):
            line(trend[:, index], color, 2)
        draw.text((8, 4), f"temporal {10 ** trend[-1, 0]:.4f}  spatial {10 ** trend[-1, 1]:.4f}  (mean of the last "
                          f"{window}, log scale, {len(losses)} steps)", fill=(230, 230, 230))
    return torch.from_numpy(np.array(image, dtype=np.float32) / 255.0)
