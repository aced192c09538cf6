"""Per-epoch augmentation on the device: `nnexp.data.augment`'s transforms as torch kernels.

Why: on a GPU the NumPy path costs, every epoch, a host pass over the training images and an
upload of the result (150 MB for the 50,000 images, 750 MB for the expanded 250,000). Here
the images uploaded once (`DeviceArrays`) are transformed where they live, chunk by chunk,
and the epoch's copy never leaves the device.

Semantics are NumPy's, key for key in the order of AUGMENT_KEYS: `shift` the same exact
integer moves with zero fill, `rotate` and `elastic` the same bilinear resampling (zeros
outside) of the same source coordinates, which the tests check to ~1e-5 for fixed angles and
fields. The random draws are not NumPy's: one seed per epoch from the loop's NumPy `rng`
(whose state the checkpoint saves, so a resume is exact) seeds a torch generator on the
device, so a GPU run's augmented images differ from a CPU run's.

Non-goals: labels (never changed, never passed); uint8 images; more than one channel (the
NumPy reference has one angle and one field per image, not per channel).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from nnexp.data.augment import check_augment_spec
from nnexp.data.expand import gaussian_matrix

CHUNK = 8192  # images per resampling step: temporaries stay ~100 MB (noise, grids), whatever N is


def augment_epoch(x: torch.Tensor, spec: dict | None, rng: np.random.Generator) -> torch.Tensor:
    """A new (N, 1, H, W) tensor on x's device of randomly transformed copies of x, one per
    image, as `nnexp.data.augment.augment_epoch` describes; an empty spec returns x itself.

    A non-empty spec draws exactly one integer from `rng`, whatever N is. In the generator: shifts
    (2, N), then angles (N,), then elastic noise chunk by chunk.
    """
    spec = check_augment_spec(spec)
    if not spec:
        return x
    n, dev = len(x), x.device
    gen = torch.Generator(device=dev)
    gen.manual_seed(int(rng.integers(2**63)))
    if "shift" in spec:
        s = spec["shift"]
        offsets = torch.randint(-s, s + 1, (2, n), generator=gen, device=dev)  # (2, N) dy, dx
    if "rotate" in spec:
        d = spec["rotate"]
        angles = (torch.rand(n, generator=gen, device=dev, dtype=torch.float64) * 2 - 1) * d  # (N,) in [-d, d)
    out = torch.empty_like(x)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        part = x[start:stop]  # (n, 1, H, W)
        if "shift" in spec:
            part = shift(part, offsets[0, start:stop], offsets[1, start:stop])
        if "rotate" in spec:
            part = rotate(part, angles[start:stop])
        if "elastic" in spec:
            part = elastic(part, gen, **spec["elastic"])
        out[start:stop] = part
    return out


def shift(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Move image i's content dy[i] rows down and dx[i] columns right, zero-filling: exactly
    `nnexp.data.expand.shift` per image. A gather, not a resampling, so values are copied bit
    for bit. images (n, C, H, W); dy, dx (n,) integers."""
    n, c, h, w = images.shape
    rows = torch.arange(h, device=images.device) - dy[:, None]  # (n, H) source row of each output row
    cols = torch.arange(w, device=images.device) - dx[:, None]  # (n, W)
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # (n, H, W)
    index = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]  # (n, H, W) flat source
    moved = images.reshape(n, c, h * w).gather(2, index.reshape(n, 1, h * w).expand(n, c, h * w))
    return torch.where(inside.reshape(n, 1, h * w), moved, 0).reshape(n, c, h, w)


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate image i about its centre by degrees[i], counter-clockwise as displayed; the
    source coordinates of `nnexp.data.expand.rotate_each`. images (n, 1, H, W); degrees (n,)."""
    h, w = images.shape[-2:]
    theta = torch.deg2rad(degrees.to(torch.float64))
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]  # (n, 1, 1)
    r = torch.arange(h, dtype=torch.float64, device=images.device)[:, None] - (h - 1) / 2  # (H, 1) from the centre
    c = torch.arange(w, dtype=torch.float64, device=images.device)[None, :] - (w - 1) / 2  # (1, W)
    rows = cos * r + sin * c + (h - 1) / 2  # (n, H, W): each output pixel's point rotated back
    cols = -sin * r + cos * c + (w - 1) / 2
    return warp(images, rows, cols)


def elastic(images: torch.Tensor, gen: torch.Generator, alpha: float, sigma: float) -> torch.Tensor:
    """Simard et al. (2003) with a fresh field per image from `gen`: uniform noise in [-1, 1),
    then `distort`. images (n, 1, H, W)."""
    n, _, h, w = images.shape
    noise = torch.rand((2, n, h, w), generator=gen, device=images.device, dtype=images.dtype) * 2 - 1
    return distort(images, noise, alpha, sigma)


def distort(images: torch.Tensor, noise: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """Resample each image at (row + dy, col + dx), where (dy, dx) is `noise` (2, n, H, W)
    smoothed by a Gaussian of std `sigma` with zero padding (G_h @ noise @ G_w^T, the matrices
    of `nnexp.data.expand.elastic`) and scaled by `alpha`."""
    h, w = images.shape[-2:]
    g_rows, g_cols = (_gaussian(k, sigma, images.device, images.dtype) for k in (h, w))  # (H, H), (W, W)
    field = (g_rows @ noise @ g_cols.T) * alpha  # (2, n, H, W) displacements in pixels
    rows = torch.arange(h, device=images.device, dtype=images.dtype)[:, None] + field[0]  # (n, H, W)
    cols = torch.arange(w, device=images.device, dtype=images.dtype)[None, :] + field[1]
    return warp(images, rows, cols)


@functools.lru_cache(maxsize=8)
def _gaussian(n: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """`gaussian_matrix` uploaded once, not per chunk: a copy from host memory would make the
    host wait for the GPU's queue each time."""
    return torch.from_numpy(gaussian_matrix(n, sigma)).to(device, dtype)


def warp(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Bilinear resample, zero outside: out[i, :, r, c] = images[i, :, rows[i, r, c],
    cols[i, r, c]] in pixel coordinates, as NumPy's `_warp`. images (n, C, H, W); rows, cols
    (n, H, W).

    align_corners=True puts grid_sample's -1 and +1 at the centres of the first and last
    pixels, so pixel p is 2p/(size-1) - 1; its zero padding drops off-image neighbours as
    `_warp`'s zero border does. The clamp to the input's range removes rounding overshoot,
    as `_warp` does.
    """
    h, w = images.shape[-2:]
    grid = torch.stack((cols * (2 / (w - 1)) - 1, rows * (2 / (h - 1)) - 1), dim=-1)  # (n, H, W, 2) as (x, y)
    out = F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.clamp_(min=images.amin().clamp(max=0), max=images.amax())  # no host sync: 0-d tensors
