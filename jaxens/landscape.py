"""Santurkar et al.'s measures of the loss landscape along the training trajectory.

* :func:`along_gradient`: how much the loss and its gradient change along the gradient
  direction (loss variation, gradient predictiveness, effective beta-smoothness).
* :func:`ics`: internal covariate shift from the optimisation view, the change of a layer's
  gradient once the layers before it have taken their update.

Both take one member's ``params`` and a ``batch = (x, y)``; lift them to an ensemble with
``jax.vmap``. ``loss_fn(params, x, y)`` is the scalar mean loss on the batch; it decides
whether batch norm uses batch statistics (the paper measures the training loss, so training
mode) and closes over any model state.

References:
  Santurkar et al., 2018, How Does Batch Normalization Help Optimization?
  (https://arxiv.org/abs/1805.11604).
"""

import functools
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jaxens import _validation


class AlongGradient(NamedTuple):
  """Landscape along ``w - eta g``, ``g = grad L(w)``, for a grid of step sizes ``eta``.

  Attributes:
    loss_variation: ``max_eta L(w - eta g) - min_eta L(w - eta g)``.
    gradient_predictiveness: range over ``eta`` of ``|grad L(w) - grad L(w - eta g)|_2``.
    beta_smoothness: ``max_eta |grad L(w) - grad L(w - eta g)|_2 / |eta g|_2``.
    losses: ``L(w - eta g)`` per ``eta``, shape ``(len(etas),)``.
    grad_distances: ``|grad L(w) - grad L(w - eta g)|_2`` per ``eta``.
    loss: ``L(w)``.
    grad_norm: ``|g|_2``.
  """
  loss_variation: jax.Array
  gradient_predictiveness: jax.Array
  beta_smoothness: jax.Array
  losses: jax.Array
  grad_distances: jax.Array
  loss: jax.Array
  grad_norm: jax.Array


class ICS(NamedTuple):
  """Internal covariate shift per layer, in the order of ``layer_keys``.

  Attributes:
    distance: ``|G_i - G'_i|_2``, shape ``(num_layers,)``.
    cosine: ``<G_i, G'_i> / (|G_i|_2 |G'_i|_2)``, shape ``(num_layers,)``.
  """
  distance: jax.Array
  cosine: jax.Array


def along_gradient(loss_fn, params, batch, etas):
  """Loss variation, gradient predictiveness and effective beta-smoothness along the gradient.

  With ``g = grad L(w)`` and ``w_eta = w - eta g`` for every ``eta`` in ``etas``:

  .. math::

     \\text{loss variation} = \\max_\\eta L(w_\\eta) - \\min_\\eta L(w_\\eta), \\qquad
     \\text{gradient predictiveness} = \\max_\\eta d_\\eta - \\min_\\eta d_\\eta, \\\\
     \\beta_\\text{eff} = \\max_\\eta \\frac{d_\\eta}{\\lVert \\eta g \\rVert_2}, \\qquad
     d_\\eta = \\lVert \\nabla L(w) - \\nabla L(w_\\eta) \\rVert_2.

  The ranges are over the grid only; ``L(w)`` itself is returned as ``loss`` but not included.
  The step sizes are evaluated in one ``vmap``.

  Args:
    loss_fn: ``loss_fn(params, x, y) -> scalar``.
    params: one member's parameters.
    batch: ``(x, y)``.
    etas: 1-D array of positive step sizes (the paper uses a grid such as
      ``0.05 lr ... 0.4 lr``); may be traced.

  Returns:
    An :class:`AlongGradient`.
  """
  _validation.check_examples(batch, "batch")
  if jnp.ndim(etas) != 1 or jnp.shape(etas)[0] < 1:
    raise ValueError(f"etas: expected a non-empty 1-D array, got shape {jnp.shape(etas)}")
  if not isinstance(etas, jax.core.Tracer) and not np.all(np.asarray(etas) > 0):
    raise ValueError(f"etas: expected positive step sizes, got {etas}")
  return _along_gradient(loss_fn, params, batch, jnp.asarray(etas))


@functools.partial(jax.jit, static_argnames="loss_fn")
def _along_gradient(loss_fn, params, batch, etas):
  value_and_grad = jax.value_and_grad(loss_fn)
  loss, grads = value_and_grad(params, *batch)
  grad_norm = optax.global_norm(grads)

  def at_step(eta):
    stepped = _sgd(params, grads, eta)
    stepped_loss, stepped_grads = value_and_grad(stepped, *batch)
    distance = optax.global_norm(jax.tree.map(jnp.subtract, grads, stepped_grads))
    return stepped_loss, distance

  losses, distances = jax.vmap(at_step)(etas)
  return AlongGradient(
      loss_variation=jnp.max(losses) - jnp.min(losses),
      gradient_predictiveness=jnp.max(distances) - jnp.min(distances),
      beta_smoothness=jnp.max(distances / (etas * grad_norm)),
      losses=losses,
      grad_distances=distances,
      loss=loss,
      grad_norm=grad_norm,
  )


def ics(loss_fn, params, batch, layer_keys, *, lr=None, update_fn=None):
  """Internal covariate shift, optimisation view: how a layer's gradient moves under it.

  ``G = grad L(w)`` on ``batch``. For layer ``i``, ``w^(i)`` is ``w`` with layers
  ``0 .. i-1`` replaced by their updated values and every other parameter unchanged, and
  ``G'_i`` is layer ``i``'s part of ``grad L(w^(i))`` on the same batch:

  .. math:: \\mathrm{ICS}_i = \\lVert G_i - G'_i \\rVert_2, \\qquad
     \\cos \\angle(G_i, G'_i) = \\frac{\\langle G_i, G'_i \\rangle}
     {\\lVert G_i \\rVert_2 \\lVert G'_i \\rVert_2}.

  The first layer has nothing before it, so its distance is 0 and its cosine 1. The gradients
  at all ``w^(i)`` are computed in one ``vmap`` over layers.

  Args:
    loss_fn: ``loss_fn(params, x, y) -> scalar``.
    params: one member's parameters, a mapping from layer names to sub-trees.
    batch: ``(x, y)``.
    layer_keys: the layers in network order. Each entry is a top-level key of ``params``
      (``"dense_0"``) or a tuple of keys updated and measured together
      (``("dense_0", "norm_0")``). Keys not listed are never updated.
    lr: learning rate of the plain SGD update ``w <- w - lr G``; may be traced.
    update_fn: instead of ``lr``, any update ``update_fn(params, grads) -> new_params``
      (for example one optimizer step).

  Returns:
    An :class:`ICS`.
  """
  _validation.check_examples(batch, "batch")
  if not isinstance(params, Mapping):
    raise ValueError(f"params: expected a mapping from layer names, got {type(params).__name__}")
  groups = tuple(tuple(k) if isinstance(k, (tuple, list)) else (k,) for k in layer_keys)
  flat_keys = [k for group in groups for k in group]
  if not groups or not all(groups):
    raise ValueError(f"layer_keys: expected a non-empty sequence of layers, got {layer_keys!r}")
  missing = [k for k in flat_keys if k not in params]
  if missing:
    raise ValueError(f"layer_keys: {missing} are not keys of params ({list(params)})")
  if len(set(flat_keys)) != len(flat_keys):
    raise ValueError(f"layer_keys: expected each key once, got {layer_keys!r}")
  if (lr is None) == (update_fn is None):
    raise ValueError("lr, update_fn: expected exactly one of them")
  if update_fn is None:
    return _ics(loss_fn, params, batch, (lr,), groups=groups, update_fn=_sgd)
  return _ics(loss_fn, params, batch, (), groups=groups, update_fn=update_fn)


def _sgd(params, grads, lr):
  return jax.tree.map(lambda p, g: p - lr * g, params, grads)


@functools.partial(jax.jit, static_argnames=("loss_fn", "groups", "update_fn"))
def _ics(loss_fn, params, batch, update_args, *, groups, update_fn):
  grad_fn = jax.grad(loss_fn)
  grads = grad_fn(params, *batch)
  stepped = update_fn(params, grads, *update_args)

  def grads_after_earlier_layers(i):
    shifted = dict(params)
    for j, group in enumerate(groups):
      for k in group:
        shifted[k] = jax.tree.map(lambda s, p, j=j: jnp.where(j < i, s, p), stepped[k], params[k])
    return grad_fn(shifted, *batch)

  # Nothing precedes the first group, whose gradient after the update is ``grads`` itself.
  shifted_grads = jax.vmap(grads_after_earlier_layers)(jnp.arange(1, len(groups)))
  distances, cosines = [], []
  for i, group in enumerate(groups):
    before, _ = ravel_pytree([grads[k] for k in group])
    after = before if i == 0 else ravel_pytree(
        [jax.tree.map(lambda a: a[i - 1], shifted_grads[k]) for k in group])[0]
    distances.append(jnp.linalg.norm(before - after))
    cosines.append(jnp.vdot(before, after) / (jnp.linalg.norm(before) * jnp.linalg.norm(after)))
  return ICS(distance=jnp.stack(distances), cosine=jnp.stack(cosines))
