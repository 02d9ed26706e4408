"""One member's optimisation step, and the per-member divergence bookkeeping around it."""

import jax
import jax.numpy as jnp
import optax

from jaxens import nn
from jaxens import optim
from jaxens.ensemble import _config
from jaxens.ensemble import _keys


def resolve_optimizer(optimizer):
  """A factory ``f(**kwargs) -> GradientTransformation`` from a name or a callable, or a ready
  ``GradientTransformation`` as it is."""
  if isinstance(optimizer, optax.GradientTransformation) or callable(optimizer):
    return optimizer
  if optimizer not in optim.OPTIMIZERS:
    raise ValueError(f"optimizer: expected one of {optim.OPTIMIZERS}, a callable or an "
                     f"optax.GradientTransformation, got {optimizer!r}")
  return getattr(optim, optimizer)


def split_hparams(model, hparams):
  """Per-member values by who consumes them: ``(model, regularisers, optimizer)``."""
  model_h = {k: v for k, v in hparams.items() if k in model.hyperparams}
  regularisers = {k: v for k, v in hparams.items() if k in _config.REGULARISER_OVERRIDES}
  rest = {k: v for k, v in hparams.items() if k not in model_h and k not in regularisers}
  return model_h, regularisers, rest


def make_optimizer(cfg, optimizer_hparams):
  optimizer = resolve_optimizer(cfg.optimizer)
  if isinstance(optimizer, optax.GradientTransformation):
    return optimizer
  return optimizer(**{**cfg.resolved_optimizer_kwargs, **optimizer_hparams})


def init_member(cfg, model, key, x_example, hparams):
  """A member's ``(params, state, opt_state)`` before its first step."""
  params, state = model.init(jax.random.fold_in(key, _keys.INIT), x_example)
  opt_state = make_optimizer(cfg, split_hparams(model, hparams)[2]).init(params)
  return params, state, opt_state


def train_step(cfg, model, task, member, batch, step):
  """One optimisation step of one member: the stepped ``(params, state, opt_state)`` and the
  minibatch metrics (``task.metrics``, the data loss without penalties first)."""
  params, state, opt_state, key, hparams = member
  model_h, regularisers, optimizer_h = split_hparams(model, hparams)
  x, y = batch
  penalties = [(regularisers.get(name, getattr(cfg, name)), penalty_fn)
               for name, penalty_fn in (("l1", nn.l1_penalty), ("l2", nn.l2_penalty))
               if name in regularisers or getattr(cfg, name)]

  def loss_fn(p):
    out, new_state = model.apply(p, state, x, train=True, rng=_keys.step_rng(key, step),
                                 **model_h)
    metrics = task.metrics(out, y)
    penalty = sum(weight * penalty_fn(p) for weight, penalty_fn in penalties)
    return metrics["loss"] + penalty, (new_state, metrics)

  (_, (new_state, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, new_opt_state = make_optimizer(cfg, optimizer_h).update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  radius = regularisers.get("max_norm", cfg.max_norm)
  if radius is not None:
    new_params = nn.max_norm(new_params, radius)
  return (new_params, new_state, new_opt_state), metrics


def all_finite(tree):
  """Whether every float entry of one member's ``tree`` is finite.

  Integer and key leaves (step counters, PRNG keys in an optimizer state) cannot diverge and
  are skipped. One reduction per dtype over the concatenated leaves: XLA fuses the
  concatenation into it, and one kernel compiles in half the time of a reduction per leaf.
  """
  by_dtype = {}
  for leaf in jax.tree.leaves(tree):
    if jnp.issubdtype(leaf.dtype, jnp.inexact):
      by_dtype.setdefault(leaf.dtype, []).append(jnp.ravel(leaf))
  checks = [jnp.all(jnp.isfinite(jnp.concatenate(leaves))) for leaves in by_dtype.values()]
  return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


def where_members(mask, new, old):
  """``new`` for the members where ``mask`` (E,) is True, else ``old``, leaf by leaf."""
  return jax.tree.map(
      lambda n, o: jnp.where(mask.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old)
