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

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from nnexp.backends.numpy.functional import activate, activation_grad, softmax
from nnexp.network import BN_EPS, BN_MOMENTUM, LayerSpec


class Layer:
    def __init__(self, spec: LayerSpec, need_dx: bool):
        self.spec = spec
        self.need_dx = need_dx  # False for the first layer: saves col2im and a matmul per step
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.update_stats = True  # batch norm: off while the model takes a gradient only

    def canonical(self, name: str, value: np.ndarray) -> np.ndarray:
        """A parameter in the portable layout of `nnexp.network` (a copy)."""
        return value.copy()

    def internal(self, name: str, value: np.ndarray) -> np.ndarray:
        """A portable-layout parameter in this layer's working layout."""
        return value

    def backward(self, da: np.ndarray) -> np.ndarray | None:
        return self.backward_z(da * activation_grad(self.spec.activation, self.a))

    def _normalise(self, z: np.ndarray, train: bool) -> np.ndarray:
        """Batch normalisation of z (N, units), per column: a dense layer's rows are the
        batch's examples, a conv layer's every position of every example's feature map.

        Its column sums are `_column_sum`'s, whose float32 error grows as sqrt(N), not N."""
        p = self.params
        if train:
            mean = _column_mean(z)
            centred = z - mean
            var = _column_mean(centred * centred)
            std = np.sqrt(var + BN_EPS)
            if self.update_stats:
                for key, value in (("running_mean", mean), ("running_var", var)):
                    p[key] *= BN_MOMENTUM
                    p[key] += (1.0 - BN_MOMENTUM) * value
        else:
            centred, std = z - p["running_mean"], np.sqrt(p["running_var"] + BN_EPS)
        self.normalised, self.std = centred / std, std
        return p["gamma"] * self.normalised + p["beta"]

    def _normalise_backward(self, dz: np.ndarray) -> np.ndarray:
        """The gradient through the batch statistics: every example's normalised value
        depends on the whole batch through its mean and variance."""
        xn = self.normalised
        self.grads["gamma"] = _column_sum(dz * xn)
        self.grads["beta"] = _column_sum(dz)
        dxn = dz * self.params["gamma"]
        return (dxn - _column_mean(dxn) - xn * _column_mean(dxn * xn)) / self.std


def _column_sum(t: np.ndarray) -> np.ndarray:
    """Sum over axis 0, in t's dtype, with an error that grows as sqrt(N), not N.

    NumPy adds the rows of a (N, F) array one after another, so a float32 sum's error grows
    with N: over every position of a conv layer (36,864 rows for beyond_bn's first layer at
    batch 64) the batch statistics were ~1e-2 off, and the gradient with them. Two levels
    instead: float32 sums of ~sqrt(N) rows each (the blocks' rows added element-wise,
    contiguous, faster than the one long sum), then those partial sums in float64. float64
    input is summed as before, bit for bit.
    """
    if t.dtype == np.float64:
        return t.sum(axis=0)
    n = len(t)
    block = math.isqrt(n)
    full = n - n % block
    partial = t[:full].reshape(-1, block, *t.shape[1:]).sum(axis=0)  # (block, F): n//block rows each
    return (partial.sum(axis=0, dtype=np.float64) + t[full:].sum(axis=0, dtype=np.float64)).astype(t.dtype)


def _column_mean(t: np.ndarray) -> np.ndarray:
    return _column_sum(t) / len(t)


class Dense(Layer):
    """a = f(x W + b), with the book's network3 dropout on the input x.

    Training multiplies x by a Bernoulli(1-p) mask; inference uses (1-p) x instead, so the
    expected input is the same (not "inverted" dropout). A softmax layer is a Dense layer
    whose f is the softmax. With batch normalisation, f is applied to
    gamma * (z - mean) / sqrt(var + eps) + beta: the mini-batch's statistics in training,
    the running averages in inference.
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
        if self.spec.batch_norm:  # beta is the bias
            z = self._normalise(x @ self.params["w"], train)
        else:
            z = x @ self.params["w"] + self.params["b"]  # (B, n_out)
        self.z = z
        self.a = softmax(z) if self.spec.type == "softmax" else activate(self.spec.activation, z)
        return self.a

    def backward_z(self, dz: np.ndarray) -> np.ndarray | None:
        if self.spec.batch_norm:
            dz = self._normalise_backward(dz)
        else:
            self.grads["b"] = dz.sum(axis=0)
        self.grads["w"] = self.x.T @ dz  # (n_in, n_out)
        if not self.need_dx:
            return None
        dx = dz @ self.params["w"].T  # (B, n_in)
        if self.spec.dropout:
            dx *= self.mask
        if self.in_nhwc is not None:
            b, h, w, c = self.in_nhwc
            dx = dx.reshape(b, c, h, w).transpose(0, 2, 3, 1)
        return dx


def _pool_rows(z: np.ndarray, ties: str = "first") -> tuple[np.ndarray, np.ndarray]:
    """Max over the leading axis of (P, N, F), where P indexes the offsets inside a window.

    Returns the maxima (N, F) and a 0/1 mask (P, N, F) marking, per window, where its
    gradient goes: the *first* maximal offset in row-major window order, or with
    `ties="all"` every maximal one (Theano's rule, each getting the whole gradient). Exact
    ties are common (a blank patch convolves to the bias everywhere); routing the gradient to
    one input is what torch does.
    """
    best = z[0].copy()
    for k in range(1, len(z)):
        np.maximum(best, z[k], out=best)
    mask = np.empty_like(z)
    taken = np.zeros(best.shape, dtype=bool)
    for k in range(len(z)):
        hit = z[k] == best
        if ties == "first":
            hit &= ~taken
            taken |= hit
        mask[k] = hit
    return best, mask


def _window_major(t: np.ndarray, p: int) -> np.ndarray:
    """(B, H, W, ...) -> (p, p, B, H/p, W/p, ...) as a view: pool-window offsets first."""
    b, h, w = t.shape[:3]
    t = t.reshape(b, h // p, p, w // p, p, *t.shape[3:])
    return t.transpose(2, 4, 0, 1, 3, *range(5, t.ndim))


def _receptive_fields(x: np.ndarray, k: int, p: int, stride: int = 1) -> np.ndarray:
    """(B, H, W, C) -> a view (p, p, B, Hp, Wp, k, k, C) of every k x k receptive field,
    `stride` apart."""
    windows = sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]  # (B, Ho, Wo, C, k, k)
    return _window_major(windows, p).transpose(0, 1, 2, 3, 4, 6, 7, 5)


GATHER_BELOW_RUN = 32  # im2col by index gather when a window's contiguous run is shorter
GATHER_MAX_ENTRIES = 1 << 20  # ... and the index stays small (training batches, not evaluation)


class Conv(Layer):
    """Convolution with stride `stride` over the input zero-padded by `pad` on each side
    (none: a valid convolution), optional batch normalisation, optional p x p max-pool,
    then the activation.

    As network3's ConvPoolLayer, the activation comes after pooling (the same result for
    monotone activations, and p*p times fewer activations to compute). Batch normalisation
    comes before pooling, on every position of the feature map, as in conv -> BN -> ReLU ->
    pool. im2col orders its rows by pool-window offset first, so pooling is an element-wise
    max of p*p contiguous blocks, and normalising them all is one column-wise operation.
    Under `pool_ties: all` the bias is added after the pool, as network3 adds it
    (`_bias_after_pool`).
    """

    def __init__(self, spec: LayerSpec, need_dx: bool):
        super().__init__(spec, need_dx)
        self._gather_index: dict[tuple[int, ...], np.ndarray] = {}

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        pad, p = self.spec.pad, self.spec.pool
        if pad:
            x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        b = x.shape[0]
        hp, wp = self.spec.out_shape[1:]  # the pooled output, as build_spec worked it out
        self.cols = self._im2col(x)  # rows (p, p, B, Hp, Wp), columns (k, k, C)
        self.in_shape = x.shape
        z = self.cols @ self.params["w"]  # (p*p*B*Hp*Wp, F)
        if self.spec.batch_norm:  # beta is the bias
            z = self._normalise(z, train)
        elif not self._bias_after_pool:
            z += self.params["b"]
        z = z.reshape(p * p, b * hp * wp, -1)  # (p*p, B*Hp*Wp, F)
        if p > 1:
            z, self.mask = _pool_rows(z, self.spec.pool_ties)  # (B*Hp*Wp, F)
        if self._bias_after_pool:
            z += self.params["b"]
        self.a = activate(self.spec.activation, z.reshape(b, hp, wp, -1))  # (B, Hp, Wp, F)
        return self.a

    @property
    def _bias_after_pool(self) -> bool:
        """Whether the bias is added after the max-pool, as network3's ConvPoolLayer does.

        Only under `pool_ties: all` does the place matter. There each window sends its
        gradient to every tied maximum, so a bias added before the pool would collect it once
        per tie (a blank window: p*p times); network3 adds it after and collects it once.
        Under the first-max rule the bias stays before the pool, as in torch's conv2d +
        max_pool2d: the pooled values are bitwise the same either way (rounding is monotone),
        but a bias added first can round two nearly equal inputs into a tie and so move the
        gradient to the other one; keeping it there keeps those results bitwise unchanged.
        """
        spec = self.spec
        return spec.pool > 1 and spec.pool_ties == "all" and not spec.batch_norm

    def _im2col(self, x: np.ndarray) -> np.ndarray:
        """(B, H, W, C) -> (p*p*B*Hp*Wp, k*k*C): every receptive field as a row."""
        k, p, s, c = self.spec.size, self.spec.pool, self.spec.stride, x.shape[3]
        windows = _receptive_fields(x, k, p, s)
        if k * c >= GATHER_BELOW_RUN or windows.size > GATHER_MAX_ENTRIES:
            return windows.reshape(-1, k * k * c)  # a strided copy, runs of k*C values
        # Short runs (the one-channel input layer) copy faster as a gather with cached indices.
        index = self._gather_index.get(x.shape)
        if index is None:
            positions = np.arange(x.size, dtype=np.intp).reshape(x.shape)
            index = _receptive_fields(positions, k, p, s).reshape(-1, k * k * c)
            self._gather_index[x.shape] = index
        return np.take(x.reshape(-1), index)

    def backward_z(self, dz: np.ndarray) -> np.ndarray | None:
        k, p, s = self.spec.size, self.spec.pool, self.spec.stride
        b, hp, wp, f = dz.shape
        dz = dz.reshape(1, b * hp * wp, f)
        if self._bias_after_pool:
            self.grads["b"] = dz.sum(axis=(0, 1))  # once per window, before any tie copies it
        if p > 1:
            dz = self.mask * dz  # (p*p, B*Hp*Wp, F): each window's gradient to its maximum
        dz = dz.reshape(-1, f)  # (p*p*B*Hp*Wp, F): im2col's rows
        if self.spec.batch_norm:
            dz = self._normalise_backward(dz)
        elif not self._bias_after_pool:
            self.grads["b"] = dz.sum(axis=0)
        self.grads["w"] = self.cols.T @ dz  # (k*k*C, F)
        if not self.need_dx:
            return None
        # col2im: scatter-add each kernel offset's columns back onto the input. One transposing
        # copy first makes every block added below contiguous (runs of Wo*C values, not C).
        dcols = (dz @ self.params["w"].T).reshape(p, p, b, hp, wp, k, k, -1)
        dcols = np.ascontiguousarray(dcols.transpose(5, 6, 2, 3, 0, 4, 1, 7))  # (k, k, B, Hp, p, Wp, p, C)
        ho, wo = hp * p, wp * p
        dcols = dcols.reshape(k, k, b, ho, wo, -1)  # (k, k, B, Ho, Wo, C)
        dx = np.zeros(self.in_shape, dtype=dz.dtype)  # (B, H, W, C)
        rows, cols = s * (ho - 1) + 1, s * (wo - 1) + 1  # the span of one offset's positions
        for i in range(k):
            for j in range(k):
                dx[:, i:i + rows:s, j:j + cols:s, :] += dcols[i, j]
        pad = self.spec.pad
        return dx[:, pad:-pad, pad:-pad, :] if pad else dx  # the padding's gradient goes nowhere

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
        p = self.spec.size
        b, h, w, c = x.shape
        self.a, self.mask = _pool_rows(_window_major(x, p).reshape(p * p, -1, c), self.spec.pool_ties)
        self.a = self.a.reshape(b, h // p, w // p, c)
        return self.a

    def backward(self, da: np.ndarray) -> np.ndarray | None:
        if not self.need_dx:
            return None
        p = self.spec.size
        b, hp, wp, c = da.shape
        dx = (self.mask * da.reshape(1, -1, c)).reshape(p, p, b, hp, wp, c)
        return dx.transpose(2, 3, 0, 4, 1, 5).reshape(b, hp * p, wp * p, c)

    backward_z = backward


def make_layer(spec: LayerSpec, need_dx: bool, rng: np.random.Generator) -> Layer:
    if spec.type in ("dense", "softmax"):
        return Dense(spec, need_dx, rng)
    if spec.type == "conv":
        return Conv(spec, need_dx)
    if spec.type == "pool":
        return Pool(spec, need_dx)
    raise ValueError(f"unknown layer type {spec.type!r}")
