"""Stable Virtual Camera's diffusion: its noise levels, the denoiser's scalings and per-view guidance.

The model predicts noise (epsilon) on a discrete DDPM schedule of 1000 levels, written in EDM form
(docs/multiview.md, section 3): with ``sigma`` one of the schedule's noise levels, the denoised
estimate is ``x - sigma * F(x / sqrt(sigma^2 + 1), index(sigma), ...)``. Sampling walks ``steps`` of
those levels from the noisiest down with Euler steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

TRAINING_LEVELS = 1000
BETA_START, BETA_END = 5e-6, 0.012  # the "scaled linear" betas (their square roots are evenly spaced)
LOG_SNR_SHIFT = 2.4  # every sigma is multiplied by e^2.4: the schedule is shifted towards more noise


def training_sigmas() -> torch.Tensor:
    """The 1000 noise levels the model was trained on, ascending ``(1000,)`` float64:
    ``sigma_i = e^2.4 * sqrt((1 - abar_i) / abar_i)`` with ``abar`` the cumulative product of ``1 - beta``.

    >>> s = training_sigmas(); round(float(s[0]), 6), round(float(s[-1]), 4)
    (0.024649, 84.9163)
    """
    betas = torch.linspace(BETA_START**0.5, BETA_END**0.5, TRAINING_LEVELS, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, 0)
    return torch.exp(torch.tensor(LOG_SNR_SHIFT, dtype=torch.float64)) * ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


def sampling_sigmas(steps: int) -> torch.Tensor:
    """The noise levels of a ``steps``-step run, descending, with a final 0: ``(steps + 1,)`` float64.
    The levels are those of the training indices ``floor(linspace(999, 0, steps, endpoint excluded))``.

    >>> [round(float(s), 4) for s in sampling_sigmas(50)[[0, 1, 49, 50]]]
    [84.9163, 75.2586, 0.1634, 0.0]
    """
    if steps < 1:
        raise ValueError(f"the step count must be 1 or more, got {steps}")
    step = TRAINING_LEVELS / steps
    indices = (TRAINING_LEVELS - 1 - torch.arange(steps, dtype=torch.float64) * step).floor().long()
    return torch.cat([training_sigmas()[indices], torch.zeros(1, dtype=torch.float64)])


def level_index(sigma: torch.Tensor) -> torch.Tensor:
    """The index (0..999) of the training level nearest to each ``sigma``: what the model is told as its
    timestep."""
    levels = training_sigmas().to(sigma.device)
    return (sigma.double()[..., None] - levels).abs().argmin(-1)


def input_scale(sigma: torch.Tensor) -> torch.Tensor:
    """``c_in = 1 / sqrt(sigma^2 + 1)``: what the noisy latents are multiplied by before the model."""
    return (sigma.double() ** 2 + 1).rsqrt()


def view_guidance(scale: float, scale_near_input: float, is_input: torch.Tensor,
                  near_input: torch.Tensor, ramp: bool = False) -> torch.Tensor:
    """Classifier-free guidance scale per view ``(V,)``, applied to the denoised estimates.

    Args:
        scale: the guidance of the views to generate.
        scale_near_input: the guidance of views that look from (almost) where an input view looks.
        is_input: ``(V,)`` bool, the input views.
        near_input: ``(V,)`` bool, views with an input's camera (rotation within 10 degrees, same centre
            and intrinsics).
        ramp: the guidance grows from ``scale_near_input`` to ``scale`` with a view's distance (in views)
            from the nearest input, instead of being ``scale`` everywhere.

    >>> view_guidance(2.0, 1.2, torch.tensor([True, False, False]), torch.tensor([True, False, False]), ramp=True)
    tensor([1.2000, 1.6000, 2.0000])
    """
    guidance = torch.full(is_input.shape, float(scale), dtype=torch.float64)
    if ramp and is_input.any() and not is_input.all():
        position = torch.arange(len(is_input), dtype=torch.float64)
        distance = (position[:, None] - position[is_input][None]).abs().min(1).values
        guidance = scale_near_input + (scale - scale_near_input) * distance / distance.max()
    return torch.where(near_input, torch.tensor(float(scale_near_input), dtype=torch.float64), guidance).float()


@dataclass
class ViewConditions:
    """What one pass of the model knows about its ``V`` views.

    Attributes:
        clean: ``(V, 4, h, w)`` VAE latents of the input views (anything at the views to generate).
        is_input: ``(V,)`` bool, the input views.
        context: ``(V, 1, D)`` the CLIP image embedding (the mean over the input views, at every view).
        plucker: ``(V, 6, h, w)`` each view's rays (``recapture.multiview.plucker_map``).
    """

    clean: torch.Tensor
    is_input: torch.Tensor
    context: torch.Tensor
    plucker: torch.Tensor

    def unconditional(self) -> ViewConditions:
        """The branch classifier-free guidance subtracts: no image (no context, no view replaced), the same
        cameras."""
        return ViewConditions(torch.zeros_like(self.clean), torch.zeros_like(self.is_input),
                              torch.zeros_like(self.context), self.plucker)


# the network: (x (B*V, 11, h, w), timestep indices (B*V,), context (B*V, 1, D), plucker (B*V, 6, h, w),
# views V) -> predicted noise (B*V, 4, h, w)
Network = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def denoise_views(network: Network, x: torch.Tensor, sigma: float, branches: list[ViewConditions]) -> list[torch.Tensor]:
    """The denoised estimate of ``x`` ``(V, 4, h, w)`` at noise level ``sigma`` for each branch, in one
    network call: input views are replaced by their clean latents, scaled like the rest by
    ``input_scale``, and marked in a fifth channel; then ``D = x~ - sigma * F(...)``."""
    views = len(x)
    level = torch.tensor([sigma], dtype=torch.float64)
    scale, index = float(input_scale(level)), level_index(level)
    inputs, replaced = [], []
    for branch in branches:
        mask = branch.is_input.to(x.dtype)[:, None, None, None]
        x_replaced = x * (1 - mask) + branch.clean.to(x.dtype) * mask
        replaced.append(x_replaced)
        inputs.append(torch.cat([x_replaced * scale, mask.expand(-1, 1, *x.shape[2:]), branch.plucker.to(x.dtype)], 1))
    eps = network(torch.cat(inputs), index.expand(views * len(branches)).to(x.device),
                  torch.cat([b.context for b in branches]).to(x.dtype), torch.cat([b.plucker for b in branches]).to(x.dtype),
                  views)
    return [r - sigma * e for r, e in zip(replaced, eps.chunk(len(branches)))]


def sample_views(network: Network, conditions: ViewConditions, guidance: torch.Tensor, steps: int,
                 draw: Callable[[tuple[int, ...]], torch.Tensor],
                 on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Euler sampling of one pass: the views' latents ``(V, 4, h, w)``, input views equal to their clean
    latents. Guidance (``(V,)``, ``view_guidance``) mixes the unconditional and conditional estimates per
    view. Each step evaluates at ``sigma + 1e-6`` after adding the noise that raises ``sigma`` to it, as
    the reference does.

    Args:
        draw: standard normal noise of a shape (a seeded ``torch.Generator``'s ``randn``): the start and
            each step's small addition.
        on_step: called with the step index after each step (progress and Cancel).
    """
    sigmas = sampling_sigmas(steps)
    x = draw(tuple(conditions.clean.shape)).to(conditions.clean) * float((1 + sigmas[0] ** 2).sqrt())
    mix = guidance.to(x)[:, None, None, None]
    for i in range(steps):
        sigma, following = float(sigmas[i]), float(sigmas[i + 1])
        raised = sigma + 1e-6
        x = x + draw(tuple(x.shape)).to(x) * (raised**2 - sigma**2) ** 0.5
        uncond, cond = denoise_views(network, x, sigma, [conditions.unconditional(), conditions])
        denoised = uncond + mix * (cond - uncond)
        x = x + (following - raised) * (x - denoised) / raised
        if on_step is not None:
            on_step(i)
    mask = conditions.is_input.to(x.dtype)[:, None, None, None]
    return x * (1 - mask) + conditions.clean.to(x) * mask
