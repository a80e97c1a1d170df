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


def oracle(target: torch.Tensor):
    """A network that knows the clean latents of every view: its noise prediction is exact for the
    conditional branch, so the sampler must land on ``target``."""
    from recapture.seva_sampling import training_sigmas

    def network(x, index, context, plucker, views):
        assert x.shape[1] == 11 and len(index) == len(x) == len(context) == len(plucker) and views == len(target)
        sigma = training_sigmas()[index].float()[:, None, None, None]
        noisy = x[:, :4] / input_scale(sigma.double()).float()  # undo c_in
        return (noisy - target.repeat(len(x) // views, 1, 1, 1)) / sigma

    return network


def test_sampling_with_an_exact_network_lands_on_the_clean_latents():
    from recapture.seva_sampling import ViewConditions, sample_views

    g = torch.Generator().manual_seed(0)
    target = torch.randn(3, 4, 5, 6, generator=g)
    is_input = torch.tensor([True, False, False])
    conditions = ViewConditions(clean=target * is_input[:, None, None, None], is_input=is_input,
                                context=torch.randn(3, 1, 8, generator=g), plucker=torch.randn(3, 6, 5, 6, generator=g))
    steps = []
    out = sample_views(oracle(target), conditions, torch.tensor([1.0, 2.0, 2.0]), 10,
                       lambda shape: torch.randn(shape, generator=g), steps.append)
    torch.testing.assert_close(out, target, atol=1e-4, rtol=0)
    assert steps == list(range(10))
    # the unconditional branch sees no image: no view replaced, no mark, no context; the same rays
    seen = []

    def recording(x, index, context, plucker, views):
        seen.append((x[:3, 4].amax().item(), x[3, 4].amin().item(), x[4:, 4].amax().item(),
                     context[:3].abs().max().item(), torch.equal(plucker[:3], plucker[3:])))
        return torch.zeros(len(x), 4, 5, 6)

    sample_views(recording, conditions, torch.ones(3), 1, lambda shape: torch.zeros(shape))
    assert seen == [(0.0, 1.0, 0.0, 0.0, True)]  # the mask marks the input view in the conditional branch only


def test_one_pass_through_the_tiny_network():
    """The sampler drives our network as it is (the tiny configuration): the shapes and the timestep
    indices fit, the input view comes back as given and the generated ones are finite."""
    from recapture.multiview import plucker_map, seva_intrinsics
    from recapture.seva import SevaUNet, tiny_seva_config
    from recapture.seva_sampling import ViewConditions, sample_views

    torch.manual_seed(0)
    network = SevaUNet(tiny_seva_config()).eval()
    poses = torch.eye(4).repeat(3, 1, 1)
    poses[1:, 0, 3] = torch.tensor([0.2, 0.4])
    g = torch.Generator().manual_seed(1)
    clean = torch.randn(3, 4, 4, 4, generator=g)
    is_input = torch.tensor([True, False, False])
    conditions = ViewConditions(clean, is_input, torch.randn(1, 1, 32, generator=g).expand(3, 1, 32),
                                plucker_map(poses, seva_intrinsics(torch.full((3,), 60.0), 32, 32), 32, 32))
    with torch.no_grad():
        out = sample_views(network, conditions, torch.tensor([1.2, 2.0, 2.0]), 3,
                           lambda shape: torch.randn(shape, generator=g))
    assert out.shape == (3, 4, 4, 4) and torch.equal(out[0], clean[0]) and torch.isfinite(out).all()
