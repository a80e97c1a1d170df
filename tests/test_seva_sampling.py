"""Stable Virtual Camera's noise levels and guidance, against the figures measured on the reference
(docs/multiview.md, section 3)."""

from __future__ import annotations

import doctest

import torch

from recapture import seva_sampling
from recapture.seva_sampling import input_scale, level_index, sampling_sigmas, training_sigmas, view_guidance


def test_doctests():
    assert doctest.testmod(seva_sampling).failed == 0


def test_the_schedule_is_the_references():
    sigmas = training_sigmas()
    assert sigmas.shape == (1000,) and bool((sigmas.diff() > 0).all())
    torch.testing.assert_close(sigmas[[0, -1]], torch.tensor([0.024649, 84.9163], dtype=torch.float64),
                               atol=0, rtol=2e-5)  # measured on the reference, to 6 digits
    fifty = sampling_sigmas(50)
    assert fifty.shape == (51,) and fifty[-1] == 0 and bool((fifty.diff() < 0).all())
    assert level_index(fifty[:-1]).flip(0).tolist() == list(range(19, 1000, 20))  # 19, 39, ..., 999
    torch.testing.assert_close(fifty[[0, 1, 49]], torch.tensor([84.9163, 75.2586, 0.163425], dtype=torch.float64),
                               atol=5e-5, rtol=0)
    assert sampling_sigmas(1).tolist() == [float(sigmas[-1]), 0.0]
    torch.testing.assert_close(input_scale(torch.tensor([0.0, 1.0])), torch.tensor([1.0, 0.5**0.5], dtype=torch.float64))


def test_guidance_per_view():
    inputs = torch.tensor([True, False, False, False, False])
    near = torch.tensor([True, False, False, False, True])  # the last view looks from the input's camera
    assert view_guidance(2.0, 1.2, inputs, near).tolist() == [1.2000000476837158, 2.0, 2.0, 2.0, 1.2000000476837158]
    torch.testing.assert_close(view_guidance(3.0, 1.0, inputs, near, ramp=True), torch.tensor([1.0, 1.5, 2.0, 2.5, 1.0]))
