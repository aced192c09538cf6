"""Activations and costs for the NumPy backend, each value beside its derivative.

Activation derivatives are written in terms of the activation's *output* a = f(z), so a
layer only keeps what it already computed. Costs follow network2.py's strategy objects:
`value` is the mean cost over the batch (summed over output units), `delta` is its gradient
with respect to the output layer's pre-activation z, already divided by the batch size.
"""

from __future__ import annotations

import numpy as np


# --- activations: f(z) and f'(z) expressed through a = f(z) ---------------------------------


def sigmoid(z: np.ndarray) -> np.ndarray:
    # 1/(1+exp(-z)) overflows exp for z << 0; this identity cannot.
    return 0.5 * (1.0 + np.tanh(0.5 * z))


ACTIVATIONS = {
    "sigmoid": (sigmoid, lambda a: a * (1.0 - a)),
    "tanh": (np.tanh, lambda a: 1.0 - a * a),
    "relu": (lambda z: np.maximum(z, 0), lambda a: (a > 0).astype(a.dtype)),
    "linear": (lambda z: z, lambda a: np.ones_like(a)),
}


def activate(name: str, z: np.ndarray) -> np.ndarray:
    return ACTIVATIONS[name][0](z)


def activation_grad(name: str, a: np.ndarray) -> np.ndarray:
    return ACTIVATIONS[name][1](a)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))  # (B, K), shifted so exp cannot overflow
    return e / e.sum(axis=1, keepdims=True)


def one_hot(y: np.ndarray, k: int, dtype) -> np.ndarray:
    out = np.zeros((y.shape[0], k), dtype=dtype)
    out[np.arange(y.shape[0]), y] = 1
    return out


# --- costs ------------------------------------------------------------------------------------


def cost_value(cost: str, z: np.ndarray, a: np.ndarray, y: np.ndarray) -> float:
    """Mean cost over the batch. z, a: (B, K) output pre-activation and activation; y: (B,) labels."""
    if cost == "log-likelihood":
        # -log softmax(z)[y] = logsumexp(z) - z[y], computed from z so it never takes log(0).
        zmax = z.max(axis=1)
        lse = zmax + np.log(np.exp(z - zmax[:, None]).sum(axis=1))
        return float(np.mean(lse - z[np.arange(len(y)), y]))
    target = one_hot(y, z.shape[1], z.dtype)
    if cost == "cross-entropy":
        # -[y ln a + (1-y) ln(1-a)] with a = sigmoid(z), rewritten as softplus(z) - y*z.
        per_unit = np.maximum(z, 0) - target * z + np.log1p(np.exp(-np.abs(z)))
        return float(np.mean(per_unit.sum(axis=1)))
    if cost == "quadratic":
        return float(np.mean(0.5 * ((a - target) ** 2).sum(axis=1)))
    raise ValueError(f"unknown cost {cost!r}")


def cost_delta(cost: str, activation: str, a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d(mean cost)/dz for the output layer: (B, K)."""
    target = one_hot(y, a.shape[1], a.dtype)
    batch = a.shape[0]
    if cost in ("log-likelihood", "cross-entropy"):
        # softmax + log-likelihood and sigmoid + cross-entropy both reduce to a - y: the
        # activation's slope cancels, which is why these pairs learn fast (chapter 3).
        return (a - target) / batch
    if cost == "quadratic":
        return (a - target) * activation_grad(activation, a) / batch
    raise ValueError(f"unknown cost {cost!r}")
