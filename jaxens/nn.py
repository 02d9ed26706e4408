"""Pure-function multilayer perceptrons: ``mlp_init`` and ``mlp_apply``.

A hidden layer is ``Dense -> [norm] -> activation -> [dropout]`` with the norm before the
activation (``norm_position="pre"``, Ioffe & Szegedy's placement) or
``Dense -> activation -> [norm] -> [dropout]`` (``"post"``). The last layer gives logits,
optionally normalised too (``norm_logits``, the Keras BN model of the E2 experiment).

Parameters are a dict ``{"dense_0": {"kernel", "bias"}, "norm_0": {"scale", "bias"}, ...}``;
the state holds the batch-norm population statistics ``{"norm_0": {"mean", "var"}}``.
Both are plain pytrees, so an ensemble is the same tree with a leading member axis.

References:
  Ioffe & Szegedy, 2015, Batch Normalization (https://arxiv.org/abs/1502.03167).
  Ba et al., 2016, Layer Normalization (https://arxiv.org/abs/1607.06450).
  Srivastava et al., 2014, Dropout (https://jmlr.org/papers/v15/srivastava14a.html).
  Klambauer et al., 2017, Self-Normalizing Neural Networks (https://arxiv.org/abs/1706.02515).
  Wan et al., 2013, Regularization of Neural Networks using DropConnect (ICML).
  Santurkar et al., 2018, How Does Batch Normalization Help Optimization?
  (https://arxiv.org/abs/1805.11604).
"""

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "selu": jax.nn.selu,
    "linear": lambda x: x,
}
NORMS = (None, "batch", "layer")
NORM_POSITIONS = ("pre", "post")
DROPOUT_KINDS = ("standard", "gaussian", "alpha", "dropconnect")
_NAMED_INITS = {
    "he_uniform": jax.nn.initializers.he_uniform,
    "he_normal": jax.nn.initializers.he_normal,
    "glorot_uniform": jax.nn.initializers.glorot_uniform,
    "glorot_normal": jax.nn.initializers.glorot_normal,
    "lecun_uniform": jax.nn.initializers.lecun_uniform,
    "lecun_normal": jax.nn.initializers.lecun_normal,
}
# SELU's negative saturation -lambda*alpha, the value alpha dropout drops to.
_ALPHA_PRIME = -1.0507009873554805 * 1.6732632423543772


@dataclasses.dataclass(frozen=True)
class BNNoise:
  """Santurkar et al.'s "noisy BN": a_ij <- s_ij * a_ij + m_ij after each batch norm.

  At every training step and for each activation j, mu_j ~ U(-mean_range, mean_range) and
  sigma_j ~ U(scale_low, scale_high); per example i, m_ij ~ U(mu_j +- jitter) and
  s_ij ~ U(sigma_j +- jitter). Evaluation mode adds no noise.
  """
  mean_range: float = 0.5
  scale_low: float = 1.0
  scale_high: float = 1.25
  jitter: float = 0.1


@dataclasses.dataclass(frozen=True)
class MLPConfig:
  """A multilayer perceptron. Defaults: the E1 pool member, 784-100-100-100-10 ReLU.

  Attributes:
    sizes: layer widths, input first and number of classes last.
    activation: one of ``relu``, ``sigmoid``, ``tanh``, ``selu``, ``linear``.
    norm: ``None``, ``"batch"`` or ``"layer"``.
    norm_position: ``"pre"`` (Dense -> norm -> activation) or ``"post"`` the activation.
    norm_layers: indices of the hidden layers that are normalised (0 is the first hidden
      layer); ``None`` normalises every hidden layer.
    norm_logits: also normalise the logits before the softmax.
    bn_momentum: moving-average momentum: ``pop <- m * pop + (1 - m) * batch`` (Keras 0.99).
    bn_eps: variance epsilon (Keras 1e-3).
    bn_noise: inject Santurkar's noise after every batch norm while training.
    dropout: drop rate after every hidden layer (for ``dropconnect``: of the weights of every
      layer after the first).
    input_dropout: drop rate on the inputs (for ``dropconnect``: of the first layer's weights).
    dropout_kind: ``standard`` (inverted Bernoulli), ``gaussian`` (multiplicative
      N(1, p/(1-p))), ``alpha`` (SELU-preserving) or ``dropconnect`` (Bernoulli on weights,
      one mask per minibatch).
    init: kernel initialiser: ``he|glorot|lecun`` + ``_uniform|_normal``, ``uniform:a``
      (U(-a, a)), ``normal:sigma`` or ``torch`` (PyTorch ``nn.Linear``: kernel and bias
      U(+-1/sqrt(fan_in))). Biases start at zero except for ``torch``.
  """
  sizes: tuple = (784, 100, 100, 100, 10)
  activation: str = "relu"
  norm: Optional[str] = None
  norm_position: str = "pre"
  norm_layers: Optional[tuple] = None
  norm_logits: bool = False
  bn_momentum: float = 0.99
  bn_eps: float = 1e-3
  bn_noise: Optional[BNNoise] = None
  dropout: float = 0.0
  input_dropout: float = 0.0
  dropout_kind: str = "standard"
  init: str = "glorot_uniform"

  def __post_init__(self):
    sizes = tuple(int(s) for s in self.sizes)
    object.__setattr__(self, "sizes", sizes)
    if len(sizes) < 2 or min(sizes) < 1:
      raise ValueError(f"sizes: expected at least two positive widths, got {self.sizes}")
    _check_choice("activation", self.activation, tuple(ACTIVATIONS))
    _check_choice("norm", self.norm, NORMS)
    _check_choice("norm_position", self.norm_position, NORM_POSITIONS)
    _check_choice("dropout_kind", self.dropout_kind, DROPOUT_KINDS)
    if self.norm_layers is not None:
      layers = tuple(sorted(int(i) for i in self.norm_layers))
      object.__setattr__(self, "norm_layers", layers)
      if layers and not 0 <= layers[0] <= layers[-1] < self.n_hidden:
        raise ValueError(
            f"norm_layers: expected hidden-layer indices in [0, {self.n_hidden}), got {layers}")
    for name in ("dropout", "input_dropout"):
      rate = getattr(self, name)
      if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name}: expected a rate in [0, 1), got {rate}")
    if not 0.0 <= self.bn_momentum < 1.0:
      raise ValueError(f"bn_momentum: expected a value in [0, 1), got {self.bn_momentum}")
    if self.bn_eps <= 0:
      raise ValueError(f"bn_eps: expected a positive value, got {self.bn_eps}")
    if self.bn_noise is not None and self.norm != "batch":
      raise ValueError("bn_noise: needs norm='batch'")
    _kernel_init(self.init)  # Fails early on an unknown initialiser.

  @property
  def n_hidden(self):
    return len(self.sizes) - 2

  def normalised(self, layer):
    """Whether layer ``layer`` (``n_hidden`` is the logits layer) carries a norm."""
    if self.norm is None:
      return False
    if layer == self.n_hidden:
      return self.norm_logits
    return self.norm_layers is None or layer in self.norm_layers

  @property
  def stochastic(self):
    """Whether training mode needs an ``rng``."""
    return self.dropout > 0 or self.input_dropout > 0 or self.bn_noise is not None


def _check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f"{name}: expected one of {choices}, got {value!r}")


def _kernel_init(spec):
  if spec in _NAMED_INITS:
    return _NAMED_INITS[spec]()
  if spec == "torch":
    return jax.nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
  kind, _, scale = spec.partition(":")
  if kind in ("uniform", "normal") and scale:
    try:
      scale = float(scale)
    except ValueError:
      scale = -1.0
    if scale > 0:
      if kind == "uniform":
        return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
            key, shape, dtype, -scale, scale)
      return jax.nn.initializers.normal(scale)
  raise ValueError(
      f"init: expected one of {sorted(_NAMED_INITS)}, 'torch', 'uniform:<a>' or "
      f"'normal:<sigma>' with a positive scale, got {spec!r}")


def mlp_init(key, cfg):
  """Returns ``(params, state)`` for ``cfg``; ``state`` holds the BN population statistics."""
  kernel_init = _kernel_init(cfg.init)
  params, state = {}, {}
  for layer, (fan_in, fan_out) in enumerate(zip(cfg.sizes[:-1], cfg.sizes[1:])):
    kernel_key, bias_key = jax.random.split(jax.random.fold_in(key, layer))
    if cfg.init == "torch":
      bound = 1.0 / np.sqrt(fan_in)
      bias = jax.random.uniform(bias_key, (fan_out,), jnp.float32, -bound, bound)
    else:
      bias = jnp.zeros((fan_out,), jnp.float32)
    params[f"dense_{layer}"] = {
        "kernel": kernel_init(kernel_key, (fan_in, fan_out), jnp.float32), "bias": bias}
    if cfg.normalised(layer):
      params[f"norm_{layer}"] = {"scale": jnp.ones((fan_out,), jnp.float32),
                                 "bias": jnp.zeros((fan_out,), jnp.float32)}
      if cfg.norm == "batch":
        state[f"norm_{layer}"] = {"mean": jnp.zeros((fan_out,), jnp.float32),
                                  "var": jnp.ones((fan_out,), jnp.float32)}
  return params, state


def mlp_apply(cfg, params, state, x, *, train, rng=None, dropout=None):
  """Logits for inputs ``x_NxD``.

  Args:
    cfg: the ``MLPConfig``.
    params, state: from ``mlp_init``.
    x: ``(N, sizes[0])`` inputs.
    train: batch statistics, dropout and BN noise when True; population statistics and a
      deterministic network when False, so one example's output never depends on its batch.
    rng: PRNG key, required when training with dropout or BN noise.
    dropout: a rate (a float or a traced scalar, e.g. one per ensemble member) that replaces
      ``cfg.dropout`` after every hidden layer; its layers are present even at rate 0, where
      they are the identity.

  Returns:
    ``(logits_NxC, new_state)``; in training mode ``new_state`` holds the moving averages
    updated with this batch, in evaluation mode it is ``state``.
  """
  stochastic = cfg.stochastic or dropout is not None
  if train and stochastic and rng is None:
    raise ValueError(
        "rng: a PRNG key is required when train=True with dropout or bn_noise; "
        "pass rng=jax.random.PRNGKey(...)")
  noise_rng = rng if train and stochastic else None
  logits, batch_stats = _forward(cfg, params, state, x, use_batch_stats=train, rng=noise_rng,
                                 dropout=dropout)
  if not train or cfg.norm != "batch":
    return logits, state
  m = cfg.bn_momentum
  new_state = jax.tree.map(lambda pop, batch: m * pop + (1 - m) * batch, state, batch_stats)
  return logits, new_state


def mlp_intermediates(cfg, params, state, x, *, train, rng=None):
  """What every layer computes, for the landscape and distribution measures.

  Same arguments as :func:`mlp_apply` (``train`` uses batch statistics and, with ``rng``,
  dropout and BN noise). Returns a dict with, for each layer ``l`` (``n_hidden`` is the logits
  layer):

  - ``activation_input_<l>``: the input to the activation, ``(N, sizes[l + 1])``: the
    normalised ``Wu + b`` with ``norm_position="pre"``, else ``Wu + b`` itself (Ioffe &
    Szegedy's Figure 1 plots its percentiles for one sigmoid);
  - ``output_<l>``: the layer's output after its activation, norm and dropout (the logits for
    the last layer).
  """
  intermediates = {}
  _forward(cfg, params, state, x, use_batch_stats=train,
           rng=rng if train and cfg.stochastic else None, intermediates=intermediates)
  return intermediates


def population_statistics(cfg, params, state, xs, batch_size):
  """Re-estimates the BN population statistics by averaging over ``xs`` (Ioffe's method).

  Following Algorithm 2 of Ioffe & Szegedy (2015), each of the ``len(xs) // batch_size``
  minibatches runs in training mode (batch statistics, no dropout);
  ``E[x] = mean of batch means`` and ``Var[x] = m/(m-1) * mean of batch variances``, with
  ``m = batch_size``. Returns the new state.
  """
  if cfg.norm != "batch":
    return state
  if not 2 <= batch_size <= xs.shape[0]:
    raise ValueError(
        f"batch_size: expected an integer in [2, {xs.shape[0]}] (len(xs)), got {batch_size}")
  n_batches = xs.shape[0] // batch_size
  batches = xs[:n_batches * batch_size].reshape(n_batches, batch_size, -1)

  def batch_stats(_, x):
    return None, _forward(cfg, params, state, x, use_batch_stats=True, rng=None)[1]

  _, stats = jax.lax.scan(batch_stats, None, batches)
  unbias = batch_size / (batch_size - 1)
  return {name: {"mean": jnp.mean(s["mean"], axis=0), "var": unbias * jnp.mean(s["var"], axis=0)}
          for name, s in stats.items()}


def _forward(cfg, params, state, x, *, use_batch_stats, rng, dropout=None,
             intermediates=None):
  """The network; returns ``(logits, batch_stats)``, the per-layer BN batch statistics.

  Dropout and BN noise are applied exactly when ``rng`` is given; ``dropout`` replaces
  ``cfg.dropout`` (see ``mlp_apply``). A dict ``intermediates`` receives each layer's
  activation input and output (see ``mlp_intermediates``).
  """
  def record(name, value):
    if intermediates is not None:
      intermediates[name] = value

  hidden_rate = cfg.dropout if dropout is None else dropout
  hidden_dropout = cfg.dropout > 0 or dropout is not None
  if x.ndim != 2 or x.shape[-1] != cfg.sizes[0]:
    raise ValueError(
        f"x: expected shape (batch, {cfg.sizes[0]}) to match sizes[0], got {tuple(x.shape)}")
  keys = _LayerKeys(rng)
  apply_dropout = rng is not None
  batch_stats = {}
  h = x
  if apply_dropout and cfg.dropout_kind != "dropconnect" and cfg.input_dropout > 0:
    h = _unit_dropout(cfg.dropout_kind, keys("input_dropout"), h, cfg.input_dropout)
  for layer in range(cfg.n_hidden + 1):
    dense = params[f"dense_{layer}"]
    kernel = dense["kernel"]
    rate, present = ((cfg.input_dropout, cfg.input_dropout > 0) if layer == 0
                     else (hidden_rate, hidden_dropout))
    if apply_dropout and cfg.dropout_kind == "dropconnect" and present:
      keep = jax.random.bernoulli(keys("dropconnect", layer), 1.0 - rate, kernel.shape)
      kernel = jnp.where(keep, kernel / (1.0 - rate), 0.0)
    h = h @ kernel + dense["bias"][None, :]
    is_logits = layer == cfg.n_hidden
    activation = (lambda v: v) if is_logits else ACTIVATIONS[cfg.activation]
    normalise = cfg.normalised(layer)
    if normalise and (cfg.norm_position == "pre" or is_logits):
      h = _norm(cfg, params, state, batch_stats, layer, h, use_batch_stats, keys)
      record(f"activation_input_{layer}", h)
      h = activation(h)
    else:
      record(f"activation_input_{layer}", h)
      h = activation(h)
      if normalise:
        h = _norm(cfg, params, state, batch_stats, layer, h, use_batch_stats, keys)
    if apply_dropout and not is_logits and cfg.dropout_kind != "dropconnect" and hidden_dropout:
      h = _unit_dropout(cfg.dropout_kind, keys("dropout", layer), h, hidden_rate)
    record(f"output_{layer}", h)
  return h, batch_stats


class _LayerKeys:
  """Derives a distinct key for each (purpose, layer) from one ``rng``."""
  _PURPOSES = ("input_dropout", "dropout", "dropconnect", "bn_noise")

  def __init__(self, rng):
    self._rng = rng
    self.active = rng is not None

  def __call__(self, purpose, layer=0):
    index = self._PURPOSES.index(purpose)
    return jax.random.fold_in(jax.random.fold_in(self._rng, index), layer)


def _norm(cfg, params, state, batch_stats, layer, h, use_batch_stats, keys):
  name = f"norm_{layer}"
  scale, bias = params[name]["scale"][None, :], params[name]["bias"][None, :]
  if cfg.norm == "layer":
    mean = jnp.mean(h, axis=-1, keepdims=True)
    var = jnp.var(h, axis=-1, keepdims=True)
    return (h - mean) * jax.lax.rsqrt(var + cfg.bn_eps) * scale + bias
  if use_batch_stats:
    mean, var = jnp.mean(h, axis=0), jnp.var(h, axis=0)
    batch_stats[name] = {"mean": mean, "var": var}
  else:
    mean, var = state[name]["mean"], state[name]["var"]
  out = (h - mean[None, :]) * jax.lax.rsqrt(var[None, :] + cfg.bn_eps) * scale + bias
  if keys.active and cfg.bn_noise is not None:
    out = _bn_noise(cfg.bn_noise, keys("bn_noise", layer), out)
  return out


def _bn_noise(noise, key, a):
  step_mean_key, step_scale_key, mean_key, scale_key = jax.random.split(key, 4)
  features = a.shape[-1:]
  mu = jax.random.uniform(step_mean_key, features, a.dtype, -noise.mean_range, noise.mean_range)
  sigma = jax.random.uniform(step_scale_key, features, a.dtype, noise.scale_low, noise.scale_high)
  jitter_m = jax.random.uniform(mean_key, a.shape, a.dtype, -noise.jitter, noise.jitter)
  jitter_s = jax.random.uniform(scale_key, a.shape, a.dtype, -noise.jitter, noise.jitter)
  return (sigma[None, :] + jitter_s) * a + (mu[None, :] + jitter_m)


def _unit_dropout(kind, key, h, rate):
  """Dropout on units: each kind keeps E[output] = input (alpha: mean 0, variance 1 of SELU)."""
  if kind == "gaussian":
    return h * (1.0 + jnp.sqrt(rate / (1.0 - rate)) * jax.random.normal(key, h.shape, h.dtype))
  keep = jax.random.bernoulli(key, 1.0 - rate, h.shape)
  if kind == "standard":
    return jnp.where(keep, h / (1.0 - rate), 0.0)
  # Alpha dropout (Klambauer et al. 2017, eq. 10): drop to alpha' and restore the moments.
  a = ((1.0 - rate) * (1.0 + rate * _ALPHA_PRIME ** 2)) ** -0.5
  b = -a * _ALPHA_PRIME * rate
  return a * jnp.where(keep, h, _ALPHA_PRIME) + b


def max_norm(params, c):
  r"""Projects each unit's incoming weights onto the ball of radius ``c``.

  For every dense kernel ``W`` (fan_in, fan_out), column ``j`` becomes
  :math:`W_{:,j} \cdot \min(1, c / \lVert W_{:,j} \rVert_2)` (Keras ``MaxNorm(c)``, axis 0).
  Other parameters are unchanged. Works on a single network or a stacked ensemble. The norm
  runs over axis -2 only, so a convolution kernel (..., in, out) is constrained per spatial
  tap, not over its whole receptive field.
  """
  def project(path, leaf):
    if not _is_kernel(path):
      return leaf
    norms = jnp.sqrt(jnp.sum(jnp.square(leaf), axis=-2, keepdims=True))
    return leaf * jnp.minimum(1.0, c / jnp.maximum(norms, 1e-12))
  return jax.tree_util.tree_map_with_path(project, params)


def _is_kernel(path):
  """Whether a leaf's path names a dense or convolution kernel: ``.../kernel`` in jaxens and
  flax.linen trees, ``.../kernel/value`` in flax.nnx states."""
  names = [getattr(entry, "key", getattr(entry, "name", None)) for entry in path]
  return "kernel" in names[-2:] and names[-1] in ("kernel", "value")


def _kernels(params):
  return [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params) if _is_kernel(path)]


def l1_penalty(params):
  r""":math:`\sum |W|` over the kernels (biases and norm parameters are not penalised)."""
  return sum(jnp.sum(jnp.abs(k)) for k in _kernels(params))


def l2_penalty(params):
  r""":math:`\sum W^2` over the kernels, the Keras ``l2`` convention (no factor 1/2)."""
  return sum(jnp.sum(jnp.square(k)) for k in _kernels(params))
