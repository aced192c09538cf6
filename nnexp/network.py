"""The network, independent of any backend: layer shapes, parameter names and initial values.

Both backends build from a `NetworkSpec` and take their starting weights from `init_params`,
which draws from one seeded NumPy generator, so the same seed gives the same starting point
on every backend. Parameters are plain arrays named ``"<layer index>.w"`` / ``"<index>.b"``:

- dense and softmax: ``w`` is (n_in, n_out), ``b`` is (n_out,)
- conv: ``w`` is (filters, channels, size, size), ``b`` is (filters,)
- a layer with batch normalisation has ``gamma`` and ``beta`` instead of ``b``
  (normalising would cancel any bias exactly; beta is the bias), and ``running_mean`` and
  ``running_var``, which training updates but no optimiser touches: they travel with the
  parameters because inference needs them. Each is (n_out,) for a dense layer and
  (filters,) for a conv layer, whose statistics are per channel, over the batch and every
  position of the (unpooled) feature map

Images are (channels, height, width); a dense layer after a conv layer sees them flattened
in that order, so checkpoints mean the same thing to every backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np

from nnexp.errors import ConfigError

INPUT_SHAPE = (1, 28, 28)  # every dataset nnexp reads is 28x28 greyscale
BUFFERS = ("running_mean", "running_var")  # batch-norm statistics: stored, never trained
# Batch normalisation as in Saitoh's BatchNormalization layer: normalise z = x W by the
# mini-batch mean and (biased) variance, eps inside the square root; inference uses running
# averages updated as r <- 0.9 r + 0.1 batch value.
BN_EPS = 1e-6
BN_MOMENTUM = 0.9


@dataclass(frozen=True)
class LayerSpec:
    """One layer with its shapes resolved. `size` is the kernel (conv) or window (pool) size."""

    index: int
    type: str  # dense | conv | pool | softmax
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    activation: str | None = None
    dropout: float = 0.0
    size: int = 0
    pool: int = 1
    batch_norm: bool = False
    pad: int = 0  # conv: zero rows and columns added on each side of the input
    stride: int = 1  # conv: the step between receptive fields
    pool_ties: str = "first"  # max-pool gradient: the first tied maximum, or all (Theano's)

    @property
    def n_in(self) -> int:
        return prod(self.in_shape)

    @property
    def n_out(self) -> int:
        return prod(self.out_shape)

    @property
    def units(self) -> int:
        """What a bias or batch-norm vector runs over: output units, or a conv's filters."""
        return self.out_shape[0] if self.type == "conv" else self.n_out

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every stored array of the layer, batch-norm statistics included."""
        if self.type in ("dense", "softmax"):
            w = (self.n_in, self.n_out)
        elif self.type == "conv":
            w = (self.out_shape[0], self.in_shape[0], self.size, self.size)
        else:
            return {}
        if self.batch_norm:
            return {"w": w, **{key: (self.units,) for key in ("gamma", "beta", *BUFFERS)}}
        return {"w": w, "b": (self.units,)}

    def brief(self) -> str:
        """The layer in a few words, for a table's cell: ``conv 20@5 p2 relu``."""
        if self.type == "conv":
            text = f"conv {self.out_shape[0]}@{self.size}" + (f" pad{self.pad}" if self.pad else "")
            text += (f" s{self.stride}" if self.stride > 1 else "") + (" bn" if self.batch_norm else "")
            text += (f" p{self.pool}" if self.pool > 1 else "") + f" {self.activation}"
        elif self.type == "pool":
            text = f"pool {self.size}"
        elif self.type == "dense":
            text = f"dense {self.n_out} {self.activation}" + (" bn" if self.batch_norm else "")
        else:
            text = f"{self.type} {self.n_out}"
        text += f" drop {self.dropout:g}" if self.dropout else ""
        return text + (" ties-all" if self.pool_ties == "all" else "")

    def describe(self) -> str:
        shape = "x".join(map(str, self.out_shape))
        if self.type == "conv":
            pad = f" pad {self.pad}" if self.pad else ""
            stride = f" stride {self.stride}" if self.stride > 1 else ""
            norm = ", batch norm" if self.batch_norm else ""
            ties = " (ties: all)" if self.pool_ties == "all" and self.pool > 1 else ""
            pool = f" + maxpool {self.pool}{ties}" if self.pool > 1 else ""
            return (f"conv {self.out_shape[0]}@{self.size}x{self.size}{pad}{stride}{norm}{pool}, "
                    f"{self.activation} -> {shape}")
        if self.type == "pool":
            ties = " (ties: all)" if self.pool_ties == "all" else ""
            return f"maxpool {self.size}{ties} -> {shape}"
        drop = f", dropout {self.dropout:g}" if self.dropout else ""
        norm = ", batch norm" if self.batch_norm else ""
        act = "softmax" if self.type == "softmax" else self.activation
        return f"{self.type} {self.n_in}->{self.n_out}{norm}, {act}{drop}"


@dataclass(frozen=True)
class NetworkSpec:
    input_shape: tuple[int, ...]
    layers: tuple[LayerSpec, ...]

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every stored array's name and shape, in layer order, ``w`` before ``b``: what a
        checkpoint holds, batch-norm statistics included."""
        return {f"{layer.index}.{name}": shape
                for layer in self.layers for name, shape in layer.param_shapes().items()}

    @property
    def trainable_names(self) -> list[str]:
        """The parameters an optimiser updates and gradients exist for."""
        return [name for name in self.param_shapes() if name.split(".", 1)[1] not in BUFFERS]

    @property
    def n_params(self) -> int:
        shapes = self.param_shapes()
        return sum(prod(shapes[name]) for name in self.trainable_names)

    @property
    def num_classes(self) -> int:
        return self.layers[-1].n_out


MAX_LAYER_PARAMS = 500_000_000  # 4 GB in float64: far past the books' nets, short of a crash


def build_spec(layers: list[dict], input_shape: tuple[int, ...] = INPUT_SHAPE) -> NetworkSpec:
    """Infer every layer's input and output shape; impossible shapes are ConfigErrors."""
    shape = tuple(input_shape)
    specs = []
    for i, layer in enumerate(layers):
        path = f"model.layers.{i}"
        kind = layer["type"]
        if kind == "conv":
            if len(shape) != 3:
                raise ConfigError(f"{path}.type", "a conv layer cannot follow a dense layer")
            channels, height, width = shape
            k, pool, pad, stride = layer["size"], layer["pool"], layer.get("pad", 0), layer.get("stride", 1)
            height, width = height + 2 * pad, width + 2 * pad
            if k > min(height, width):
                padded = f" (padded by {pad})" if pad else ""
                raise ConfigError(f"{path}.size", f"kernel {k}x{k} is larger than its "
                                  f"{height}x{width} input{padded}")
            # as torch's conv2d: a last window that does not fit in the input is dropped
            out_h, out_w = (height - k) // stride + 1, (width - k) // stride + 1
            if out_h % pool or out_w % pool:
                raise ConfigError(f"{path}.pool", f"pool {pool} does not divide the "
                                  f"{out_h}x{out_w} convolution output")
            out = (layer["filters"], out_h // pool, out_w // pool)
            specs.append(LayerSpec(i, kind, shape, out, activation=layer["activation"],
                                   size=k, pool=pool, pad=pad, stride=stride,
                                   batch_norm=layer.get("batch_norm", False),
                                   pool_ties=layer.get("pool_ties", "first")))
        elif kind == "pool":
            if len(shape) != 3:
                raise ConfigError(f"{path}.type", "a pool layer cannot follow a dense layer")
            channels, height, width = shape
            k = layer["size"]
            if height % k or width % k:
                raise ConfigError(f"{path}.size", f"pool {k} does not divide its {height}x{width} input")
            out = (channels, height // k, width // k)
            specs.append(LayerSpec(i, kind, shape, out, size=k, pool_ties=layer.get("pool_ties", "first")))
        else:  # dense, softmax
            out = (layer["units"],)
            activation = "softmax" if kind == "softmax" else layer["activation"]
            specs.append(LayerSpec(i, kind, shape, out, activation=activation,
                                   dropout=layer["dropout"], batch_norm=layer.get("batch_norm", False)))
        size = sum(prod(s) for s in specs[-1].param_shapes().values())
        if size > MAX_LAYER_PARAMS:  # refused here, before a run directory exists
            raise ConfigError(path, f"{size:,} parameters in one layer ({8 * size / 2**30:,.0f} GiB as "
                                    f"float64): more than the {MAX_LAYER_PARAMS:,} nnexp allows")
        shape = out
    return NetworkSpec(tuple(input_shape), tuple(specs))


# ---------------------------------------------------------------------------------------------
# Initialisation


def _weight_sd(layer: LayerSpec, init: str, small_std: float = 0.01) -> float:
    """Standard deviation of a layer's initial weights under the named scheme."""
    fan_in = layer.n_in if layer.type != "conv" else layer.in_shape[0] * layer.size ** 2
    if init == "network3":
        # network3.py: sd = sqrt(1/n_out), with n_out of a conv layer = filters*k*k/pool_area.
        if layer.type == "conv":
            n_out = layer.out_shape[0] * layer.size ** 2 / layer.pool ** 2
        else:
            n_out = layer.n_out
        return float(np.sqrt(1.0 / n_out))
    if init == "network2":
        return float(1.0 / np.sqrt(fan_in))
    if init == "large":
        return 1.0
    if init == "xavier":
        return float(np.sqrt(1.0 / fan_in))
    if init == "he":
        return float(np.sqrt(2.0 / fan_in))
    if init == "small":  # Saitoh's weight_init_std
        return small_std
    raise ValueError(f"unknown init {init!r}")


def init_params(spec: NetworkSpec, init: str, rng: np.random.Generator,
                small_std: float = 0.01) -> dict[str, np.ndarray]:
    """Initial parameters (float64), drawn layer by layer, ``w`` then ``b``.

    network3, network2 and large draw biases from N(0, 1), as the book does; the modern
    schemes (xavier, he, small) start biases at zero. network3 starts the softmax layer at
    zero, weights and biases.
    """
    params: dict[str, np.ndarray] = {}
    book_biases = init in ("network3", "network2", "large")
    for layer in spec.layers:
        shapes = layer.param_shapes()
        if not shapes:
            continue
        if layer.batch_norm:  # w as usual; gamma 1 and beta 0: the identity; stats of N(0, 1)
            n = layer.units
            params[f"{layer.index}.w"] = rng.normal(0.0, _weight_sd(layer, init, small_std), size=shapes["w"])
            params.update({f"{layer.index}.gamma": np.ones(n), f"{layer.index}.beta": np.zeros(n),
                           f"{layer.index}.running_mean": np.zeros(n),
                           f"{layer.index}.running_var": np.ones(n)})
            continue
        w_shape, b_shape = shapes["w"], shapes["b"]
        if init == "network3" and layer.type == "softmax":
            w, b = np.zeros(w_shape), np.zeros(b_shape)
        else:
            w = rng.normal(0.0, _weight_sd(layer, init, small_std), size=w_shape)
            b = rng.normal(0.0, 1.0, size=b_shape) if book_biases else np.zeros(b_shape)
        params[f"{layer.index}.w"], params[f"{layer.index}.b"] = w, b
    return params
