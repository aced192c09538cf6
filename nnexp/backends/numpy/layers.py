"""NumPy layers, written from scratch: each layer's forward and backward side by side.

Inside this backend images travel channels-last, (B, H, W, C): convolution then becomes one
matrix product whose result is already in that layout, with no transposes per step. Conv
weights are kept as the (k*k*C, F) matrix that product needs; `canonical` / `internal`
convert from and to the portable (F, C, k, k) layout at the backend's boundary only.

`backward_z` takes the gradient with respect to the layer's pre-activation z (the output
layer receives it straight from the cost); `backward` takes it with respect to the output a.
Both store parameter gradients in `self.grads` and return the gradient for the layer below
(None for the first layer, which never needs it).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from nnexp.backends.numpy.functional import activate, activation_grad, softmax
from nnexp.network import LayerSpec


class Layer:
    def __init__(self, spec: LayerSpec, need_dx: bool):
        self.spec = spec
        self.need_dx = need_dx  # False for the first layer: saves col2im and a matmul per step
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def canonical(self, name: str, value: np.ndarray) -> np.ndarray:
        """A parameter in the portable layout of `nnexp.network` (a copy)."""
        return value.copy()

    def internal(self, name: str, value: np.ndarray) -> np.ndarray:
        """A portable-layout parameter in this layer's working layout."""
        return value

    def backward(self, da: np.ndarray) -> np.ndarray | None:
        return self.backward_z(da * activation_grad(self.spec.activation, self.a))


class Dense(Layer):
    """a = f(x W + b), with the book's network3 dropout on the input x.

    Training multiplies x by a Bernoulli(1-p) mask; inference uses (1-p) x instead, so the
    expected input is the same (not "inverted" dropout). A softmax layer is a Dense layer
    whose f is the softmax.
    """

    def __init__(self, spec: LayerSpec, need_dx: bool, rng: np.random.Generator):
        super().__init__(spec, need_dx)
        self.rng = rng
        self.keep = 1.0 - spec.dropout

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        self.in_nhwc = x.shape if x.ndim == 4 else None
        if x.ndim == 4:
            # (B, H, W, C) -> (B, C*H*W) in (C, H, W) order, the portable flattening
            x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
        if self.spec.dropout:
            if train:
                self.mask = (self.rng.random(x.shape, dtype=x.dtype) < self.keep).astype(x.dtype)
                x = x * self.mask
            else:
                x = x * x.dtype.type(self.keep)
        self.x = x
        z = x @ self.params["w"] + self.params["b"]  # (B, n_out)
        self.z = z
        self.a = softmax(z) if self.spec.type == "softmax" else activate(self.spec.activation, z)
        return self.a

    def backward_z(self, dz: np.ndarray) -> np.ndarray | None:
        self.grads["w"] = self.x.T @ dz  # (n_in, n_out)
        self.grads["b"] = dz.sum(axis=0)
        if not self.need_dx:
            return None
        dx = dz @ self.params["w"].T  # (B, n_in)
        if self.spec.dropout:
            dx *= self.mask
        if self.in_nhwc is not None:
            b, h, w, c = self.in_nhwc
            dx = dx.reshape(b, c, h, w).transpose(0, 2, 3, 1)
        return dx


def _maxpool(z: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping p x p max-pool of (B, H, W, C) -> (B, H/p, W/p, C), and the argmax.

    The loop runs over the p*p window offsets, not over pixels. Strict `>` keeps the first
    maximum in row-major window order, so exact ties (common: a blank patch convolves to the
    bias everywhere) send the gradient to one input, as torch does.
    """
    best = z[:, 0::p, 0::p, :].copy()
    which = np.zeros(best.shape, dtype=np.int8)
    for k in range(1, p * p):
        v = z[:, k // p::p, k % p::p, :]
        better = v > best
        np.copyto(best, v, where=better)
        which[better] = k
    return best, which


def _unpool(dz: np.ndarray, which: np.ndarray, p: int) -> np.ndarray:
    """Route each pooled gradient (B, H/p, W/p, C) back to its argmax: (B, H, W, C)."""
    b, h, w, c = dz.shape
    out = np.zeros((b, h * p, w * p, c), dtype=dz.dtype)
    for k in range(p * p):
        out[:, k // p::p, k % p::p, :] = np.where(which == k, dz, 0)
    return out


class Conv(Layer):
    """Valid convolution, stride 1, optional p x p max-pool, then the activation.

    As network3's ConvPoolLayer, the activation comes after pooling (the same result for
    monotone activations, and p*p times fewer activations to compute).
    """

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        k, p = self.spec.size, self.spec.pool
        b, h, w, c = x.shape
        ho, wo = h - k + 1, w - k + 1
        windows = sliding_window_view(x, (k, k), axis=(1, 2))  # (B, Ho, Wo, C, k, k), a view
        # im2col: the one copy per layer per step, rows = output pixels, cols = (k, k, C)
        self.cols = windows.transpose(0, 1, 2, 4, 5, 3).reshape(b * ho * wo, k * k * c)
        self.in_shape = x.shape
        z = (self.cols @ self.params["w"]).reshape(b, ho, wo, -1)  # (B, Ho, Wo, F)
        z += self.params["b"]
        if p > 1:
            z, self.which = _maxpool(z, p)  # (B, Ho/p, Wo/p, F)
        self.a = activate(self.spec.activation, z)
        return self.a

    def backward_z(self, dz: np.ndarray) -> np.ndarray | None:
        k, p = self.spec.size, self.spec.pool
        if p > 1:
            dz = _unpool(dz, self.which, p)  # (B, Ho, Wo, F)
        b, ho, wo, f = dz.shape
        dz = dz.reshape(-1, f)  # (B*Ho*Wo, F)
        self.grads["w"] = self.cols.T @ dz  # (k*k*C, F)
        self.grads["b"] = dz.sum(axis=0)
        if not self.need_dx:
            return None
        # col2im: scatter-add each (k, k) offset's column block back onto the input
        dcols = (dz @ self.params["w"].T).reshape(b, ho, wo, k, k, -1)  # (B, Ho, Wo, k, k, C)
        dx = np.zeros(self.in_shape, dtype=dz.dtype)
        for i in range(k):
            for j in range(k):
                dx[:, i:i + ho, j:j + wo, :] += dcols[:, :, :, i, j, :]
        return dx

    def canonical(self, name: str, value: np.ndarray) -> np.ndarray:
        if name != "w":
            return value.copy()
        f, c, k, _ = self.spec.param_shapes()["w"]
        return np.ascontiguousarray(value.reshape(k, k, c, f).transpose(3, 2, 0, 1))

    def internal(self, name: str, value: np.ndarray) -> np.ndarray:
        if name != "w":
            return value
        f, c, k, _ = value.shape
        return value.transpose(2, 3, 1, 0).reshape(k * k * c, f)  # (k*k*C, F)


class Pool(Layer):
    """A separate max-pool layer (no parameters, no activation)."""

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        self.a, self.which = _maxpool(x, self.spec.size)
        return self.a

    def backward(self, da: np.ndarray) -> np.ndarray | None:
        return _unpool(da, self.which, self.spec.size) if self.need_dx else None

    backward_z = backward


def make_layer(spec: LayerSpec, need_dx: bool, rng: np.random.Generator) -> Layer:
    if spec.type in ("dense", "softmax"):
        return Dense(spec, need_dx, rng)
    if spec.type == "conv":
        return Conv(spec, need_dx)
    if spec.type == "pool":
        return Pool(spec, need_dx)
    raise ValueError(f"unknown layer type {spec.type!r}")
