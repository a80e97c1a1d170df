"""Stable Virtual Camera's denoiser (SEVA v1.1): a multi-view UNet written from its published facts.

Stable Virtual Camera is an SD-2.x-width latent UNet whose attention also runs *across views*: one
scene's ``V`` views travel together in the batch and some layers let every view look at the others.
It is conditioned on

- the noisy latents of all views, with each input view's clean latent put in place of its noise, plus a
  mask channel (1 at input views) and the 6-channel Plücker ray map of every view: 11 channels;
- one 1024-d OpenCLIP ViT-H image embedding per view (its cross-attention context);
- the Plücker maps again, as a per-pixel scale and shift inside every residual block;
- the diffusion timestep as a discrete index 0..999.

This module only holds the network (``SevaUNet``) and its configuration (``SevaConfig``); the sampler,
the conditioning and the cameras live elsewhere (see docs/multiview.md for the facts used here). The
parameter names are those of the official single-file checkpoint (``modelv1.1.safetensors``, no key
prefix, 1,146 tensors, 1,263,968,004 parameters), so it loads with ``strict=True``; the module tree is
our own.

Layout (SD 2.x's, with the "openaimodel" indices)::

    time_embed.{0,2}                 sinusoid(320) -> 1280 -> 1280
    input_blocks.0.0                 3x3 conv 11 -> 320
    input_blocks.1..11               [ResBlock, Transformer?] per level, Downsample between levels
    middle_block.{0,1,2}             ResBlock, Transformer (all views), ResBlock
    output_blocks.0..11              [ResBlock on the skip concat, Transformer?, Upsample?]
    out.{0,2}                        GroupNorm, SiLU, 3x3 conv 320 -> 4

Every transformer holds one spatial block (self-attention, cross-attention, GEGLU feed-forward) and one
view-mixing block (the same, with each pixel attending across the views). The spatial self-attention
is per view in the high-resolution encoder levels and over all views of the scene jointly in the
blocks named in ``SevaConfig.unflatten_names`` (by default the middle block and the decoder's ds4 and
ds2 levels). There is no positional encoding: views are told apart by their mask and Plücker channels.

Memory: attention uses ``torch.nn.functional.scaled_dot_product_attention``, which picks a fused kernel
where the device has one (CUDA flash / memory-efficient, the CPU's flash kernel) and otherwise
materialises the score matrix. The largest attention is the decoder's ds2 level over all views: at
576x576 (a 72x72 latent) and 21 views that is 21 * 36 * 36 = 27,216 tokens with 10 heads, whose score
matrix would take ~14.8 GB in 16-bit per scene. Where the fused kernels are missing (some MPS builds,
unusual dtypes), ``SevaUNet.set_attention_chunk(n)`` bounds it to ``n`` queries at a time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

# --------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class SevaConfig:
    """The network's hyper-parameters. The defaults are the official v1.0 / v1.1 model's.

    The field names follow the reference's configuration, so a configuration written for it (a JSON
    object) maps straight onto this one (``from_dict``).

    - ``in_channels``: 4 latent + 1 input-view mask + 6 Plücker channels.
    - ``num_frames``: the views per pass the model was trained with (21); ``SevaUNet.forward`` takes
      the number of views as an argument, so this is only its default.
    - ``attention_resolutions``: the downsampling factors (1, 2, 4, ...) whose levels have transformers.
    - ``num_head_channels``: channels per attention head (heads = channels / this).
    - ``transformer_depth``: blocks per transformer at each level (the middle block uses the last one).
    - ``context_dim``: the width of the image embedding used as cross-attention context.
    - ``dense_in_channels``: the Plücker channels fed to every residual block.
    - ``unflatten_names``: the transformers, named ``input_ds{f}``, ``middle_ds{f}`` or
      ``output_ds{f}`` by their level's downsampling factor ``f``, whose spatial self-attention spans
      all views of a scene at once instead of each view alone.
    """

    in_channels: int = 11
    model_channels: int = 320
    out_channels: int = 4
    num_frames: int = 21
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_head_channels: int = 64
    transformer_depth: tuple[int, ...] = (1, 1, 1, 1)
    context_dim: int = 1024
    dense_in_channels: int = 6
    dropout: float = 0.0
    unflatten_names: tuple[str, ...] = ("middle_ds8", "output_ds4", "output_ds2")

    def __post_init__(self):
        for name in ("attention_resolutions", "channel_mult", "transformer_depth", "unflatten_names"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.channel_mult) != len(self.transformer_depth):
            raise ValueError(f"channel_mult {self.channel_mult} and transformer_depth {self.transformer_depth} "
                             "must have one entry per level")
        widths = [self.model_channels * m for m in self.channel_mult]
        if any(w % 32 for w in widths):
            raise ValueError(f"every level's width must be a multiple of 32 (GroupNorm groups), got {widths}")

    @classmethod
    def from_dict(cls, values: Mapping) -> SevaConfig:
        """From a JSON-like mapping; keys starting with ``_`` (comments) are ignored, unknown keys refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if not k.startswith("_")}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown SevaConfig fields: {unknown}")
        return cls(**values)

    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    @property
    def downsampling(self) -> int:
        """The latent's side must be a multiple of this (2 per level below the first)."""
        return 2 ** (len(self.channel_mult) - 1)


def tiny_seva_config() -> SevaConfig:
    """A ~1 M-parameter configuration with every kind of block of the full model, for tests: a level
    with per-view attention (ds1), one without attention (ds2, like the full model's deepest level),
    all-view attention in the middle block and the decoder's ds1 level, a 1x1 skip conv, Downsample,
    Upsample and the Plücker scale/shift at two resolutions."""
    return SevaConfig(model_channels=32, num_frames=2, num_res_blocks=1, attention_resolutions=(1,),
                      channel_mult=(1, 2), num_head_channels=32, transformer_depth=(1, 1), context_dim=32,
                      unflatten_names=("middle_ds2", "output_ds1"))


# --------------------------------------------------------------------------------------------------
# what every block may need besides its input


class _Conditioning:
    """The per-call inputs shared by all blocks: the time embedding ``emb`` ``(N, 4C)``, the context
    ``(N, L, D)``, the Plücker maps ``(N, 6, h, w)`` (float32, resized once per resolution) and the
    number of views per scene (``N = scenes * views``)."""

    def __init__(self, emb: torch.Tensor, context: torch.Tensor, plucker: torch.Tensor, num_views: int):
        self.emb, self.context, self.num_views = emb, context, num_views
        self._plucker = {tuple(plucker.shape[-2:]): plucker}

    def plucker_at(self, size: tuple[int, int]) -> torch.Tensor:
        """The Plücker maps resized bilinearly (corner pixels aligned) to ``size``."""
        size = tuple(size)
        if size not in self._plucker:
            full = next(iter(self._plucker.values()))
            self._plucker[size] = F.interpolate(full, size=size, mode="bilinear", align_corners=True)
        return self._plucker[size]

    @property
    def scene_context(self) -> torch.Tensor:
        """The context of each scene's first view ``(N / views, L, D)``: all views of a scene share it."""
        return self.context[:: self.num_views]


class _Conditioned(nn.Module):
    """A block whose ``forward`` takes ``(x, cond: _Conditioning)``."""


class UNetStage(nn.ModuleList):
    """One numbered entry of ``input_blocks`` / ``output_blocks`` / ``middle_block``: layers applied in
    order, conditioned ones given the shared conditioning."""

    def forward(self, x: torch.Tensor, cond: _Conditioning) -> torch.Tensor:
        for layer in self:
            x = layer(x, cond) if isinstance(layer, _Conditioned) else layer(x)
        return x


# --------------------------------------------------------------------------------------------------
# small layers


def timestep_sinusoid(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features ``(N, dim)`` of timesteps ``t`` ``(N,)``, always in float32: the cosines of
    ``t * exp(-ln(max_period) * i / (dim / 2))`` for ``i < dim / 2``, then the sines (a zero column is
    appended for odd ``dim``)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(max_period) / half))
    angles = t.to(torch.float32)[:, None] * freqs[None]
    features = torch.cat([angles.cos(), angles.sin()], dim=1)
    return F.pad(features, (0, dim % 2))


class Float32GroupNorm(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the parameters' dtype; returns the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


class Downsample(nn.Module):
    """``(N, C, h, w) -> (N, C, h/2, w/2)``: a 3x3 convolution with stride 2 (parameter ``op``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """``(N, C, h, w) -> (N, C, 2h, 2w)``: nearest-neighbour doubling, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResBlock(_Conditioned):
    """SD 2.x's residual block with a camera-driven scale and shift: ``(N, C_in, h, w) -> (N, C_out, h, w)``.

    ``h = SiLU(GroupNorm(x))``; the Plücker maps, resized to ``h``, give through a 1x1 convolution a
    scale ``s`` and shift ``b`` of ``C_in`` channels each, ``h = h * (1 + s) + b``; then a 3x3 conv to
    ``C_out`` plus a linear projection of the time embedding (added per channel); GroupNorm, SiLU,
    dropout and a 3x3 conv; finally the input (through a 1x1 conv when the widths differ) is added.
    GroupNorms are computed in float32.
    """

    def __init__(self, channels: int, out_channels: int, emb_channels: int, dense_in_channels: int,
                 dropout: float = 0.0):
        super().__init__()
        self.in_layers = nn.Sequential(Float32GroupNorm(32, channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.dense_emb_layers = nn.Sequential(nn.Conv2d(dense_in_channels, 2 * channels, 1))
        self.out_layers = nn.Sequential(Float32GroupNorm(32, out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, cond: _Conditioning) -> torch.Tensor:
        norm, act, conv = self.in_layers
        h = act(norm(x))
        film = self.dense_emb_layers(cond.plucker_at(h.shape[-2:]).to(h.dtype))
        scale, shift = film.chunk(2, dim=1)
        h = conv(h * (1 + scale) + shift)
        h = h + self.emb_layers(cond.emb).to(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class GEGLU(nn.Module):
    """``(…, dim) -> (…, dim_out)``: one projection to ``2 * dim_out``, its first half times the exact
    GELU of its second half (parameter ``proj``)."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """``(…, dim) -> (…, dim_out)`` through a GEGLU of width ``4 * dim`` (parameters ``net.0``, ``net.2``)."""

    def __init__(self, dim: int, dim_out: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, 4 * dim), nn.Dropout(dropout), nn.Linear(4 * dim, dim_out or dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Attention(nn.Module):
    """Multi-head attention ``(B, Lq, dim)`` x context ``(B, Lk, context_dim)`` -> ``(B, Lq, dim)``: q/k/v
    projections without bias, softmax scale ``1 / sqrt(dim_head)``, an output projection with bias.
    Self-attention when no context is given.

    ``query_chunk`` (None: all at once) splits the queries into pieces of that many, which bounds the
    memory of a materialised score matrix to ``query_chunk * Lk`` per head where no fused kernel runs.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.query_chunk: int | None = None
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        source = x if context is None else context
        q, k, v = (rearrange(p, "b l (h d) -> b h l d", h=self.heads)
                   for p in (self.to_q(x), self.to_k(source), self.to_v(source)))
        if self.query_chunk is None or q.shape[2] <= self.query_chunk:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = torch.cat([F.scaled_dot_product_attention(piece, k, v)
                             for piece in q.split(self.query_chunk, dim=2)], dim=2)
        return self.to_out(rearrange(out, "b h l d -> b l (h d)"))


class SpatialBlock(nn.Module):
    """SD 2.x's transformer block on tokens ``(B, L, dim)``: pre-LayerNorm residual self-attention
    (``attn1``), cross-attention to the context (``attn2``) and feed-forward (``ff``)."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int, dropout: float = 0.0):
        super().__init__()
        self.attn1 = Attention(dim, heads, dim_head, dropout=dropout)
        self.ff = FeedForward(dim, dropout=dropout)
        self.attn2 = Attention(dim, heads, dim_head, context_dim=context_dim, dropout=dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class ViewMixBlock(nn.Module):
    """Attention across views, per pixel: tokens ``(B*V, S, dim)`` -> an update ``(B*V, S, dim)``.

    Each of the ``S`` positions of a scene becomes a sequence of its ``V`` views, which goes through a
    residual feed-forward (``ff_in``), residual self-attention across the views (``attn1``) and
    residual cross-attention to the scene context ``(B, L, context_dim)`` (``attn2``); the result of the
    final feed-forward (``ff``) is returned *without* a residual (the caller adds it to its stream).
    """

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.ff_in = FeedForward(dim, dropout=dropout)
        self.attn1 = Attention(dim, heads, dim_head, dropout=dropout)
        self.ff = FeedForward(dim, dropout=dropout)
        self.attn2 = Attention(dim, heads, dim_head, context_dim=context_dim, dropout=dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, scene_context: torch.Tensor, num_views: int) -> torch.Tensor:
        scenes, positions = x.shape[0] // num_views, x.shape[1]
        x = rearrange(x, "(b v) s c -> (b s) v c", v=num_views)
        x = x + self.ff_in(self.norm_in(x))
        x = x + self.attn1(self.norm1(x))
        # every query of a scene attends to the same context: attend with one sequence per scene
        queries = rearrange(self.norm2(x), "(b s) v c -> b (s v) c", b=scenes)
        x = x + rearrange(self.attn2(queries, scene_context), "b (s v) c -> (b s) v c", v=num_views)
        update = self.ff(self.norm3(x))
        return rearrange(update, "(b s) v c -> (b v) s c", s=positions)


class MultiviewTransformer(_Conditioned):
    """The transformer of a UNet level: ``(B*V, C, h, w) -> (B*V, C, h, w)``, residual.

    GroupNorm (eps 1e-6, in the model's dtype), tokens in row-major order, ``proj_in``; for each depth
    a ``SpatialBlock`` (self-attention per view, or over all ``V*h*w`` tokens of a scene when
    ``all_views``; cross-attention to each view's context, or to the scene's first-view context when
    ``all_views``) followed by adding a ``ViewMixBlock``'s update; ``proj_out`` back to ``C`` and the
    block input added.
    """

    def __init__(self, channels: int, heads: int, dim_head: int, context_dim: int, depth: int = 1,
                 all_views: bool = False, dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        self.all_views = all_views
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            SpatialBlock(inner, heads, dim_head, context_dim, dropout) for _ in range(depth))
        self.proj_out = nn.Linear(inner, channels)
        self.time_mix_blocks = nn.ModuleList(
            ViewMixBlock(inner, heads, dim_head, context_dim, dropout) for _ in range(depth))

    def forward(self, x: torch.Tensor, cond: _Conditioning) -> torch.Tensor:
        views, (height, width) = cond.num_views, x.shape[-2:]
        tokens = self.proj_in(rearrange(self.norm(x), "n c h w -> n (h w) c"))
        scene_context = cond.scene_context
        for spatial, mix in zip(self.transformer_blocks, self.time_mix_blocks):
            if self.all_views:
                joint = rearrange(tokens, "(b v) s c -> b (v s) c", v=views)
                tokens = rearrange(spatial(joint, scene_context), "b (v s) c -> (b v) s c", v=views)
            else:
                tokens = spatial(tokens, cond.context)
            tokens = tokens + mix(tokens, scene_context, views)
        out = rearrange(self.proj_out(tokens), "n (h w) c -> n c h w", h=height, w=width)
        return x + out


# --------------------------------------------------------------------------------------------------
# the UNet


class SevaUNet(nn.Module):
    """Stable Virtual Camera's multi-view denoiser (eps-prediction).

    ``forward(x, t, context, plucker, num_views)``:

    - ``x`` ``(B*V, in_channels, h, w)``: per view, [4 latent channels already scaled by the sampler's
      ``c_in``, 1 input-view mask, 6 Plücker channels]; the views of one scene are consecutive.
    - ``t`` ``(B*V,)``: discrete timestep indices 0..999 (integer or float).
    - ``context`` ``(B*V, L, context_dim)``: the image embedding per view (``L = 1`` in SEVA); the
      all-view blocks and the view-mixing blocks use each scene's first view's.
    - ``plucker`` ``(B*V, dense_in_channels, h, w)``: the Plücker maps at latent resolution (the same
      as in ``x``), resized inside to each level.
    - ``num_views`` ``V``: views per scene (default ``config.num_frames``); ``B*V`` must divide by it.

    Returns the predicted noise ``(B*V, out_channels, h, w)`` in ``x``'s dtype. Inputs are cast to the
    parameters' dtype (float32, bfloat16 or float16 models all run without autocast); the timestep's
    sinusoid is computed in float32 and GroupNorms in float32. ``h`` and ``w`` must be multiples of
    ``config.downsampling`` (8 for the full model: images multiple of 64 pixels).
    """

    def __init__(self, config: SevaConfig | None = None):
        super().__init__()
        self.config = config = config or SevaConfig()
        emb_dim, mc = config.time_embed_dim, config.model_channels
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def res(c_in: int, c_out: int) -> ResBlock:
            return ResBlock(c_in, c_out, emb_dim, config.dense_in_channels, config.dropout)

        def transformer(channels: int, name: str, depth: int) -> MultiviewTransformer:
            return MultiviewTransformer(channels, channels // config.num_head_channels, config.num_head_channels,
                                        config.context_dim, depth, name in config.unflatten_names, config.dropout)

        levels = len(config.channel_mult)
        self.input_blocks = nn.ModuleList([UNetStage([nn.Conv2d(config.in_channels, mc, 3, padding=1)])])
        skip_widths, width, factor = [mc], mc, 1
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                stage = UNetStage([res(width, mult * mc)])
                width = mult * mc
                if factor in config.attention_resolutions:
                    stage.append(transformer(width, f"input_ds{factor}", config.transformer_depth[level]))
                self.input_blocks.append(stage)
                skip_widths.append(width)
            if level < levels - 1:
                self.input_blocks.append(UNetStage([Downsample(width)]))
                skip_widths.append(width)
                factor *= 2

        self.middle_block = UNetStage([res(width, width),
                                       transformer(width, f"middle_ds{factor}", config.transformer_depth[-1]),
                                       res(width, width)])

        self.output_blocks = nn.ModuleList()
        for level in reversed(range(levels)):
            out_width = config.channel_mult[level] * mc
            for i in range(config.num_res_blocks + 1):
                stage = UNetStage([res(width + skip_widths.pop(), out_width)])
                width = out_width
                if factor in config.attention_resolutions:
                    stage.append(transformer(width, f"output_ds{factor}", config.transformer_depth[level]))
                if level > 0 and i == config.num_res_blocks:
                    stage.append(Upsample(width))
                    factor //= 2
                self.output_blocks.append(stage)

        self.out = nn.Sequential(Float32GroupNorm(32, width), nn.SiLU(), nn.Conv2d(width, config.out_channels, 3,
                                                                                   padding=1))

    @property
    def dtype(self) -> torch.dtype:
        return self.time_embed[0].weight.dtype

    def set_attention_chunk(self, queries: int | None) -> None:
        """Run every attention ``queries`` queries at a time (None: all at once, the default). Only
        useful where ``scaled_dot_product_attention`` has no fused kernel; the results are the same."""
        if queries is not None and queries < 1:
            raise ValueError(f"the attention chunk must be a positive number of queries, got {queries}")
        for module in self.modules():
            if isinstance(module, Attention):
                module.query_chunk = queries

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, plucker: torch.Tensor,
                num_views: int | None = None) -> torch.Tensor:
        views = num_views or self.config.num_frames
        n, _, height, width = x.shape
        self._check_inputs(x, t, context, plucker, views)
        dtype = self.dtype

        emb = self.time_embed(timestep_sinusoid(t, self.config.model_channels).to(dtype))
        cond = _Conditioning(emb, context.to(dtype), plucker.float(), views)

        h, skips = x.to(dtype), []
        for stage in self.input_blocks:
            h = stage(h, cond)
            skips.append(h)
        h = self.middle_block(h, cond)
        for stage in self.output_blocks:
            h = stage(torch.cat([h, skips.pop()], dim=1), cond)
        return self.out(h).to(x.dtype)

    def _check_inputs(self, x, t, context, plucker, views: int) -> None:
        c = self.config
        n, channels, height, width = x.shape
        problems = []
        if channels != c.in_channels:
            problems.append(f"x has {channels} channels, the model takes {c.in_channels}")
        if views < 1 or n % views:
            problems.append(f"the batch of {n} is not a whole number of scenes of {views} views")
        if height % c.downsampling or width % c.downsampling:
            problems.append(f"the latent {height}x{width} must have sides that are multiples of {c.downsampling}")
        if tuple(t.shape) != (n,):
            problems.append(f"t must have shape ({n},), got {tuple(t.shape)}")
        if context.ndim != 3 or context.shape[0] != n or context.shape[2] != c.context_dim:
            problems.append(f"context must have shape ({n}, L, {c.context_dim}), got {tuple(context.shape)}")
        if tuple(plucker.shape) != (n, c.dense_in_channels, height, width):
            problems.append(f"plucker must have shape ({n}, {c.dense_in_channels}, {height}, {width}), "
                            f"got {tuple(plucker.shape)}")
        if problems:
            raise ValueError("SevaUNet: " + "; ".join(problems))


def build_seva_unet(config: SevaConfig | None = None, device: str | torch.device | None = None,
                    dtype: torch.dtype | None = None) -> SevaUNet:
    """``SevaUNet(config)`` created directly on ``device`` (``"meta"``: no memory, for loading a
    checkpoint with ``load_state_dict(..., assign=True)``) and in ``dtype``."""
    with torch.device(device or "cpu"):
        model = SevaUNet(config)
    return model if dtype is None else model.to(dtype)


# --------------------------------------------------------------------------------------------------
# loading the official single file

WHERE_SEVA_GOES = ("Stable Virtual Camera's modelv1.1.safetensors (huggingface.co/stabilityai/stable-virtual-camera, "
                   "non-commercial licence: download it yourself) goes in models/checkpoints or "
                   "models/diffusion_models.")


def is_seva_checkpoint(keys) -> bool:
    """Whether single-file keys are Stable Virtual Camera's UNet: SD-2.x names without a prefix, with its
    camera (``dense_emb_layers``) and view-mixing (``time_mix_blocks``) layers."""
    keys = list(keys)
    return ("input_blocks.0.0.weight" in keys and any("dense_emb_layers" in k for k in keys)
            and any("time_mix_blocks" in k for k in keys))


def load_seva_unet(path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu", *,
                   config: SevaConfig | None = None) -> SevaUNet:
    """Stable Virtual Camera's UNet from its single ``.safetensors`` file, frozen, in eval mode.

    The model is built on the meta device and takes the file's tensors as its own, each cast to ``dtype``
    (None: the file's) and moved to ``device`` as it is read. Every name and shape is checked before a
    weight is read; names the model does not have are ignored, as the reference ignores them.

    Raises:
        ValueError: a pickle format, a file that is not this model (the message says what it looks like),
            missing or misshapen weights. FileNotFoundError: nothing at ``path``.
    """
    from pathlib import Path

    from safetensors import SafetensorError, safe_open

    from .svd import PICKLE_SUFFIXES, describe_checkpoint, is_svd_checkpoint

    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(f"{path.name}: only safetensors weights are loaded, never pickled {path.suffix} files "
                         f"(opening a pickle can run code). {WHERE_SEVA_GOES}")
    if not path.is_file():
        raise FileNotFoundError(f"no Stable Virtual Camera checkpoint at {path}. {WHERE_SEVA_GOES}")
    model = build_seva_unet(config, device="meta")
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if not is_seva_checkpoint(keys):
                looks = "an SVD checkpoint (load it with ReCapture Load SVD)" if is_svd_checkpoint(keys) \
                    else describe_checkpoint(keys)
                raise ValueError(f"{path.name} is not a Stable Virtual Camera checkpoint: it looks like {looks}. "
                                 f"{WHERE_SEVA_GOES}")
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in keys if k in expected}
            missing = sorted(set(expected) - set(shapes))
            wrong = sorted(k for k in shapes if shapes[k] != expected[k])
            if missing or wrong:
                named = ", ".join((missing + wrong)[:3])
                raise ValueError(f"{path.name} does not fit Stable Virtual Camera v1.1 ({len(missing)} weights "
                                 f"missing, {len(wrong)} of another shape, e.g. {named}): it is damaged, incomplete "
                                 f"or another version; download modelv1.1.safetensors again")
            dtype = dtype or f.get_tensor("input_blocks.0.0.weight").dtype  # a small tensor says the file's
            state = {k: f.get_tensor(k).to(device, dtype) for k in expected}
    except SafetensorError as e:
        raise ValueError(f"cannot read {path.name} as safetensors ({e}): the file is damaged or incomplete, "
                         "download it again") from e
    model.load_state_dict(state, strict=True, assign=True)
    return model.requires_grad_(False).eval()
