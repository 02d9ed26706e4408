"""The plain training loops that jaxens is compared with: one model, one optimizer, one step.

The experiments and benchmarks that set jaxens beside optax, Flax's examples or PyTorch build
their reference runs from these pieces, so that every comparison uses the same loop.
"""

import jax
import numpy as np
import optax

from jaxens import losses
from jaxens import nn


def optax_step(loss_fn, optimizer):
  """One optimizer step on ``loss_fn(params, *batch)``.

  Returns:
    ``step(params, opt_state, *batch) -> (params, opt_state, loss)``.
  """
  def step(params, opt_state, *batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def scan_steps(step):
  """``step`` over the leading axis of the batches, as one ``lax.scan``.

  Returns:
    ``run(params, opt_state, *batches) -> (params, opt_state, losses)``.
  """
  def run(params, opt_state, *batches):
    def body(carry, batch):
      params, opt_state, loss = step(*carry, *batch)
      return (params, opt_state), loss

    (params, opt_state), step_losses = jax.lax.scan(body, (params, opt_state), batches)
    return params, opt_state, step_losses

  return run


def mlp_loss(model, state):
  """``loss(params, x, y)``: the mean cross-entropy of a ``jaxens.nn`` MLP in training mode."""
  def loss(params, x, y):
    logits, _ = nn.mlp_apply(model, params, state, x, train=True)
    return losses.log_loss_from_logits(logits, y)

  return loss


def torch_mlp(torch, model, params=None):
  """``model`` (a plain ``nn.MLPConfig``: no norm, no dropout) as a ``torch.nn.Sequential``.

  With ``params`` (``jaxens.nn`` MLP parameters) its layers start from those weights, so that a
  torch run starts where a jaxens run does; otherwise torch initialises them.
  """
  activations = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}
  layers = []
  for fan_in, fan_out in zip(model.sizes[:-1], model.sizes[1:]):
    layers += [torch.nn.Linear(fan_in, fan_out), activations[model.activation]()]
  module = torch.nn.Sequential(*layers[:-1])
  if params is not None:
    with torch.no_grad():
      for i, linear in enumerate(module[::2]):
        linear.weight.copy_(torch.tensor(np.array(params[f"dense_{i}"]["kernel"]).T))
        linear.bias.copy_(torch.tensor(np.array(params[f"dense_{i}"]["bias"])))
  return module


def torch_mlp_params(module):
  """The ``jaxens.nn`` MLP parameters of a module built by :func:`torch_mlp`."""
  return {f"dense_{i}": {"kernel": linear.weight.detach().numpy().T.copy(),
                         "bias": linear.bias.detach().numpy().copy()}
          for i, linear in enumerate(module[::2])}
