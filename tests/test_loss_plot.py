"""The Train node's loss picture: a title and a legend that fit and read at node size, and the last
step's losses written as the node's status line writes them (one function for both: ``loss_status``).
(The picture in the real frontend, next to the real status line: tests/test_browser_previews.py.)"""

from __future__ import annotations

import numpy as np

from recapture.loss_plot import (BACKGROUND, SPATIAL_COLOR, TEMPORAL_COLOR, TITLE, loss_curve_header,
                                 loss_curve_image, loss_curve_labels, loss_parts, loss_status)

LOSSES = [(1.0 / (step + 1), 0.5 + 0.1 * (step % 3)) for step in range(40)]


def pixels(losses, width=512, height=256) -> np.ndarray:
    return (loss_curve_image(losses, width, height).numpy() * 255).round().astype(np.int16)


def near(image: np.ndarray, color, tolerance: int = 40) -> np.ndarray:
    """Where ``image`` is close to ``color`` (text is antialiased: its cores are)."""
    return np.abs(image - np.array(color)).sum(axis=-1) < tolerance


def text(image: np.ndarray) -> np.ndarray:
    """Where anything brighter than the background and the plot's faint lines is drawn."""
    return np.abs(image - np.array(BACKGROUND)).sum(axis=-1) > 150


def test_size_and_values():
    image = loss_curve_image(LOSSES)
    assert image.shape == (256, 512, 3) and 0 <= image.min() and image.max() <= 1
    assert loss_curve_image([], width=64, height=32).shape == (32, 64, 3)  # tiny: no text, no failure
    assert loss_curve_image(LOSSES[:1]).shape == (256, 512, 3)  # one step: a point


def test_title_step_count_and_legend_are_drawn_whole_in_the_top_band():
    image, header = pixels(LOSSES), loss_curve_header()
    assert 40 <= header <= 80
    drawn = text(image)
    # nothing touches the picture's edges: no text is cut off
    assert not drawn[:2].any() and not drawn[:, :2].any() and not drawn[:, -2:].any() and not drawn[-2:].any()
    # the title's row: white text on the left (the title), the step count on the right
    title_rows = near(image[: header // 2], (235, 235, 235), 60)
    assert title_rows[:, :200].sum() > 300, title_rows[:, :200].sum()
    assert text(image[: header // 2, -120:]).sum() > 80  # "40 steps"
    # the legend's row: orange (temporal) and blue (spatial) text and lines, orange first
    legend = image[header // 2: header]
    orange, blue = near(legend, TEMPORAL_COLOR), near(legend, SPATIAL_COLOR)
    assert orange.sum() > 150 and blue.sum() > 150, (orange.sum(), blue.sum())
    assert np.nonzero(orange)[1].mean() < np.nonzero(blue)[1].mean()
    # the band ends above the plot: the last rows before the plot's frame are empty (no text cut by it)
    assert not drawn[header - 1: header + 1].any()


def test_the_legend_shows_the_last_step_as_the_status_line_does():
    labels = loss_curve_labels(LOSSES)
    assert labels["title"] == TITLE and labels["steps"] == "40 steps"
    assert " · ".join(labels["legend"]) == loss_status(*LOSSES[-1]) == "temporal loss 0.0250 · spatial 0.5000"
    assert loss_parts(0.123456, 5.0) == ("temporal loss 0.1235", "spatial 5.0000")
    assert loss_curve_labels([])["legend"] == []

    # the band shows exactly those strings: a change the status line shows changes it, one it rounds away
    # does not; earlier steps never do (they are in the plot below it)
    header = loss_curve_header()
    band = lambda losses: pixels(losses)[:header]  # noqa: E731
    last = LOSSES[-1]
    assert (band(LOSSES) == band(LOSSES[:-1] + [(last[0] + 1e-6, last[1])])).all()
    assert (band(LOSSES) != band(LOSSES[:-1] + [(last[0] + 1e-3, last[1])])).any()
    assert (band(LOSSES) != band(LOSSES[:-1] + [(last[0], last[1] + 1e-3)])).any()
    assert (band(LOSSES) == band([(9.0, 9.0)] * 39 + [last])).all()


def test_fonts_read_at_node_size():
    """The node shows the picture about 360-500 px wide: the title's letters stay over 10 px tall there."""
    image, header = pixels(LOSSES), loss_curve_header()
    rows = np.nonzero(near(image[: header // 2, :200], (235, 235, 235), 60).any(axis=1))[0]
    title_height = rows.max() - rows.min() + 1
    assert title_height * 360 / 512 >= 10, title_height
