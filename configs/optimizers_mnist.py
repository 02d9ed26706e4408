"""``experiments.optimizers_mnist`` (E2): the six optimizers against optax and torch.optim,
one epoch of the seed MLP each (a reduced-scale CPU run)."""

from experiments import app
from experiments import optimizers_mnist


def get_config(preset="default"):
  return app.preset({"default": optimizers_mnist.Config}, preset)
