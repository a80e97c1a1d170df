"""The training's loss curve as a small picture (shown in the Train node and saved with its output), and
how a step's losses are written: the node's status line and the picture's legend say the same."""

from __future__ import annotations

import numpy as np
import torch

TEMPORAL_COLOR = (255, 150, 60)  # orange
SPATIAL_COLOR = (90, 160, 255)  # blue
BACKGROUND = (24, 24, 28)
TEXT_COLOR = (235, 235, 235)
DIM_COLOR = (150, 150, 160)
TITLE = "Loss per step (log scale)"
_BASE = (512, 256)  # the size the fonts below are chosen for; other sizes scale them
_TITLE_PX, _LEGEND_PX, _AXIS_PX, _MIN_PX = 22, 20, 15, 7  # shown ~300 px wide: 11-13 px
_PAD = 6


def loss_parts(temporal: float, spatial: float) -> tuple[str, str]:
    """A step's two losses as written in the Train node's status line and in its loss picture's legend."""
    return f"temporal loss {temporal:.4f}", f"spatial {spatial:.4f}"


def loss_status(temporal: float, spatial: float) -> str:
    """The losses part of the Train node's status line: ``temporal loss 0.1234 · spatial 0.5678``."""
    return " · ".join(loss_parts(temporal, spatial))


def loss_curve_labels(losses: list[tuple[float, float]]) -> dict:
    """The texts the picture shows: its title, the step count, and the legend's entries: the last step's
    losses, written as the status line writes them (none before the first step)."""
    steps = len(losses)
    return {"title": TITLE, "steps": f"{steps} step{'s' if steps != 1 else ''}" if steps else "no steps yet",
            "legend": list(loss_parts(*losses[-1])) if steps else []}


def _font(px: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=max(_MIN_PX, px))


def _fitting_font(draw, text: str, px: int, max_width: float):
    """The largest font of at most ``px`` pixels in which ``text`` fits ``max_width`` (None: none does)."""
    while px >= _MIN_PX:
        font = _font(px)
        if draw.textlength(text, font=font) <= max_width:
            return font
        px -= 1
    return None


def loss_curve_header(width: int = _BASE[0], height: int = _BASE[1]) -> int:
    """Height in pixels of the picture's top band (title and legend): it depends only on the size, the
    step count and the last step's losses, never on earlier steps."""
    scale = min(width / _BASE[0], height / _BASE[1])
    return int(_PAD + round(_TITLE_PX * scale) * 1.25 + round(_LEGEND_PX * scale) * 1.25 + _PAD)


def loss_curve_image(losses: list[tuple[float, float]], width: int = _BASE[0], height: int = _BASE[1]) -> torch.Tensor:
    """A small plot of the temporal (orange) and spatial (blue) loss over steps: ``(H, W, 3)`` in 0..1.

    A title and a legend on top (each colour with the last step's loss, as the node's status line writes
    it), the log-scale range on the left. Each step draws its own noise level, so single losses jump by
    orders of magnitude: they are drawn faint, with a running mean over a tenth of the steps on top (the
    trend to watch). Fonts are sized for the picture shown scaled down in a node; text that cannot fit
    (tiny pictures) is left out rather than cut.
    """
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    scale = min(width / _BASE[0], height / _BASE[1])
    labels = loss_curve_labels(losses)
    header = loss_curve_header(width, height)
    inner = width - 2 * _PAD

    # title row: the title on the left, the step count on the right
    title_y = _PAD
    steps_font = _fitting_font(draw, labels["steps"], round(_TITLE_PX * scale * 0.8), inner / 3)
    steps_width = draw.textlength(labels["steps"], font=steps_font) if steps_font else 0
    title_font = _fitting_font(draw, labels["title"], round(_TITLE_PX * scale), inner - steps_width - 2 * _PAD)
    if title_font:
        draw.text((_PAD, title_y), labels["title"], font=title_font, fill=TEXT_COLOR)
    if steps_font:
        draw.text((width - _PAD - steps_width, title_y), labels["steps"], font=steps_font, fill=DIM_COLOR)

    # legend row: a line of each colour, then its last loss
    legend_y = title_y + round(_TITLE_PX * scale) * 1.25
    swatch, gap = max(8, round(22 * scale)), max(4, round(14 * scale))
    entries = list(zip((TEMPORAL_COLOR, SPATIAL_COLOR), labels["legend"]))
    row = " ".join(labels["legend"])
    px = round(_LEGEND_PX * scale)
    font = _fitting_font(draw, row, px, inner - len(entries) * (swatch + 2 * gap)) if entries else None
    if font:
        x, middle = float(_PAD), legend_y + font.getbbox("0")[3] / 2 + 1
        for color, text in entries:
            draw.line([(x, middle), (x + swatch, middle)], fill=color, width=max(2, round(3 * scale)))
            x += swatch + gap / 2
            draw.text((x, legend_y), text, font=font, fill=color)
            x += draw.textlength(text, font=font) + gap
    elif not entries and (empty := _fitting_font(draw, "run training to see the losses", px, inner)):
        draw.text((_PAD, legend_y), "run training to see the losses", font=empty, fill=DIM_COLOR)

    if not losses:
        return torch.from_numpy(np.array(image, dtype=np.float32) / 255.0)
    logs = np.log10(np.maximum(np.asarray(losses, dtype=np.float64), 1e-8))  # (steps, 2)
    window = max(1, len(logs) // 10)
    kernel = np.ones(window) / window
    trend = np.stack([np.convolve(np.pad(logs[:, i], (window - 1, 0), mode="edge"), kernel, mode="valid")
                      for i in range(2)], axis=1)
    lo, hi = float(logs.min()), float(logs.max())
    span = max(hi - lo, 1e-6)

    # the plot: the log range's ends written on the left, a frame, then the faint steps and the trend
    axis_font = _font(round(_AXIS_PX * scale))
    top_text, bottom_text = f"{10 ** hi:.3g}", f"{10 ** lo:.3g}"
    left = _PAD + max(draw.textlength(t, font=axis_font) for t in (top_text, bottom_text)) + _PAD
    top, bottom, right = header + 4, height - _PAD - 2, width - _PAD
    if bottom - top < 8 or right - left < 8:  # no room for axis labels: the lines alone
        left, top = _PAD, min(header, height // 2)
    else:
        draw.text((_PAD, top - 2), top_text, font=axis_font, fill=DIM_COLOR)
        draw.text((_PAD, bottom - axis_font.getbbox(bottom_text)[3] + 2), bottom_text, font=axis_font, fill=DIM_COLOR)
        draw.rectangle([left - 2, top - 2, right, bottom + 2], outline=(55, 55, 62))

    def line(values, color, thickness):
        points = [(left + (right - left) * i / max(1, len(values) - 1), bottom - (bottom - top) * (v - lo) / span)
                  for i, v in enumerate(values)]
        draw.line(points if len(points) > 1 else points * 2, fill=color, width=thickness)

    for index, faint in ((0, (90, 62, 40)), (1, (45, 65, 95))):
        line(logs[:, index], faint, 1)
    for index, color in ((0, TEMPORAL_COLOR), (1, SPATIAL_COLOR)):
        line(trend[:, index], color, max(2, round(2 * scale)))
    return torch.from_numpy(np.array(image, dtype=np.float32) / 255.0)
