"""The network's maths in torch: forward pass and costs, as plain functions of named tensors.

They mirror `nnexp.backends.numpy.functional` and `layers.py` formula for formula, but leave
the backward pass to autograd. Parameters stay in the portable layouts of `nnexp.network`:
dense and softmax ``w`` is (n_in, n_out), so a layer is ``x @ w + b`` (not `nn.Linear`'s
transposed weight), and conv ``w`` is (F, C, k, k), which is already `conv2d`'s layout.
Nothing here reads a tensor back to the host, so the same code can be captured in a CUDA graph.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from nnexp.network import BN_EPS, BN_MOMENTUM, NetworkSpec

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "linear": lambda z: z,
}

# (shape, keep probability) -> a 0/1 mask in the input's dtype: how a model draws dropout
MaskFn = Callable[[tuple[int, ...], float], torch.Tensor]


def forward(spec: NetworkSpec, params: dict[str, torch.Tensor], x: torch.Tensor,
            mask: MaskFn | None, update_stats: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, a) of the output layer for images x (B, C, H, W).

    `mask` given = training: network3 dropout multiplies a dense layer's *input* by a
    Bernoulli(1-p) mask, and batch norm uses the batch's statistics (and, with
    `update_stats`, moves the running averages in place); `mask` None = inference: the
    input is scaled by (1-p) instead, and batch norm uses the running averages.
    """
    z = x
    for layer in spec.layers:
        i = layer.index
        if layer.type == "conv":
            # Under pool_ties "all" the bias is added after the pool, as network3 does, so a
            # window's tied maxima send it their gradient once, not once each; under "first"
            # it stays in conv2d, as torch's own layers have it (see the NumPy Conv layer).
            bias_after = layer.pool > 1 and layer.pool_ties == "all" and not layer.batch_norm
            bias = None if layer.batch_norm or bias_after else params[f"{i}.b"]  # beta is the bias
            z = F.conv2d(x, params[f"{i}.w"], bias, stride=layer.stride, padding=layer.pad)  # (B, F, Ho, Wo)
            if layer.batch_norm:  # before pooling, on every position, as the NumPy layer
                z = _normalise(z, params, i, mask is not None, update_stats)
            if layer.pool > 1:
                z = max_pool(z, layer.pool, layer.pool_ties)  # pooled before the activation, as network3
            if bias_after:
                z = z + params[f"{i}.b"][:, None, None]
            x = ACTIVATIONS[layer.activation](z)
        elif layer.type == "pool":
            x = max_pool(x, layer.size, layer.pool_ties)
        else:  # dense, softmax
            x = x.reshape(x.shape[0], -1)  # (B, C*H*W): the portable (C, H, W) order
            if layer.dropout:
                keep = 1.0 - layer.dropout
                x = x * (mask(tuple(x.shape), keep) if mask is not None else keep)
            if layer.batch_norm:  # beta is the bias
                z = _normalise(x @ params[f"{i}.w"], params, i, mask is not None, update_stats)
            else:
                z = torch.addmm(params[f"{i}.b"], x, params[f"{i}.w"])  # (B, n_out)
            x = torch.softmax(z, dim=1) if layer.type == "softmax" else ACTIVATIONS[layer.activation](z)
    return z, x


def max_pool(z: torch.Tensor, p: int, ties: str = "first") -> torch.Tensor:
    """p x p max-pooling. `ties="all"` keeps the value and sends the gradient to every
    input that ties for its window's maximum, each the whole of it (Theano's rule; torch's
    own goes to one): the pooled value plus a zero-valued sum over the tied inputs, whose
    gradient is exactly that mask."""
    pooled = F.max_pool2d(z, p)
    if ties == "first":
        return pooled
    ties_mask = z.detach() == pooled.detach().repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)
    zero_sum = F.avg_pool2d((z - z.detach()) * ties_mask, p) * (p * p)  # value 0, gradient: the mask
    return pooled.detach() + zero_sum


def _normalise(z: torch.Tensor, params: dict[str, torch.Tensor], i: int, train: bool,
               update_stats: bool) -> torch.Tensor:
    """Batch normalisation of z, as the NumPy layer computes it: per unit of a dense
    layer's (B, n), per channel of a conv layer's (B, F, H, W), over the batch and every
    position.

    The normalising itself is `F.batch_norm`'s fused kernel (training: the batch's mean and
    biased variance, as Saitoh's; inference: the running averages): its backward is one
    kernel, not autograd through six element-wise ones (a BN conv net's step takes ~18% less
    time on the CPU). The running averages are updated here instead of by it, because it
    would move the variance by the unbiased estimate, and Saitoh's (nnexp's) uses the biased one.
    """
    mean_r, var_r = params[f"{i}.running_mean"], params[f"{i}.running_var"]
    gamma, beta = params[f"{i}.gamma"], params[f"{i}.beta"]
    if not train:
        return F.batch_norm(z, mean_r, var_r, gamma, beta, training=False, eps=BN_EPS)
    if update_stats:
        with torch.no_grad():
            var, mean = torch.var_mean(z, dim=(0,) if z.ndim == 2 else (0, 2, 3), unbiased=False)
            mean_r.mul_(BN_MOMENTUM).add_((1.0 - BN_MOMENTUM) * mean)
            var_r.mul_(BN_MOMENTUM).add_((1.0 - BN_MOMENTUM) * var)
    return F.batch_norm(z, None, None, gamma, beta, training=True, eps=BN_EPS)


def one_hot(y: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """(B,) labels -> (B, k) targets, by scatter: unlike `F.one_hot`, it never checks the
    labels' range on the host, which would synchronise inside a CUDA graph."""
    return torch.zeros((y.shape[0], k), dtype=dtype, device=y.device).scatter_(1, y[:, None], 1.0)


def cost_sum(cost: str, z: torch.Tensor, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The cost summed over the batch (each example's cost summed over output units).

    Written from z where the NumPy backend is, so neither takes log(0): log-likelihood is
    logsumexp(z) - z[y]; cross-entropy is softplus(z) - y z, whose gradient is a - y exactly.
    """
    if cost == "log-likelihood":
        return F.cross_entropy(z, y, reduction="sum")
    target = one_hot(y, z.shape[1], z.dtype)
    if cost == "cross-entropy":
        return F.binary_cross_entropy_with_logits(z, target, reduction="sum")
    if cost == "quadratic":
        return 0.5 * ((a - target) ** 2).sum()
    raise ValueError(f"unknown cost {cost!r}")
