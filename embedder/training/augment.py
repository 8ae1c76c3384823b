"""Augmentations that respect astronomy: any rotation and flip, small shifts and zooms, PSF blur, noise,
brightness and stretch changes — and never a hue change, so colour information survives.

All operations work on a batch (B, C, H, W) of float images in [0, 1] on any device, with per-image
random parameters drawn from a ``torch.Generator`` so that training is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """Random view of a galaxy image; ranges are per image, drawn uniformly."""

    max_shift: float = 0.06  # fraction of the image side
    zoom: tuple[float, float] = (0.9, 1.15)  # >1 zooms in
    max_blur_sigma: float = 1.0  # pixels: extra PSF blur
    max_noise: float = 0.03  # standard deviation of added Gaussian noise, in [0, 1] units
    brightness: float = 0.2  # multiplicative: 1 ± brightness
    gamma: float = 0.25  # stretch change: x ** g with g in [1 / (1 + gamma), 1 + gamma]

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One random view of each image of a (B, C, H, W) batch in [0, 1]."""
        b = images.shape[0]

        def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
            u = torch.rand(b, *shape, generator=generator, device=generator.device)
            return (low + (high - low) * u).to(images.device)

        x = _rotate_flip_shift_zoom(
            images,
            uniform(0, 2 * math.pi),
            uniform(0, 1) < 0.5,
            uniform(-self.max_shift, self.max_shift, 2) * 2,
            uniform(*self.zoom),
        )
        x = _blur(x, uniform(0, self.max_blur_sigma))
        gamma = torch.exp(uniform(-math.log1p(self.gamma), math.log1p(self.gamma)))
        x = x.clamp(0, 1).pow(gamma.view(-1, 1, 1, 1))
        x = x * uniform(1 - self.brightness, 1 + self.brightness).view(-1, 1, 1, 1)
        noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
        x = x + noise * uniform(0, self.max_noise).view(-1, 1, 1, 1)
        return x.clamp(0, 1)


def _rotate_flip_shift_zoom(
    x: torch.Tensor, angle: torch.Tensor, flip: torch.Tensor, shift: torch.Tensor, zoom: torch.Tensor
) -> torch.Tensor:
    """Resample each image under its own rotation, optional mirror, shift (in [-1, 1] units) and zoom."""
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    mirror = torch.where(flip, -1.0, 1.0)
    theta = torch.stack(
        [
            torch.stack([cos * mirror, -sin, shift[:, 0]], dim=1),
            torch.stack([sin * mirror, cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Convolve each image with a circular Gaussian of its own ``sigma`` (pixels; 0 leaves it unchanged)."""
    radius = 3
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    sigma = sigma.clamp_min(1e-3).to(x.dtype).view(-1, 1)
    kernel_1d = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel_1d = kernel_1d / kernel_1d.sum(dim=1, keepdim=True)  # (B, k)
    b, c, h, w = x.shape
    kernel = (kernel_1d[:, :, None] * kernel_1d[:, None, :]).repeat_interleave(c, dim=0)[:, None]
    blurred = F.conv2d(F.pad(x.reshape(1, b * c, h, w), [radius] * 4, mode="reflect"), kernel, groups=b * c)
    return blurred.view(b, c, h, w)
