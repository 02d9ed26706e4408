"""``experiments.cnn_mnist``: 10 Flax examples/mnist CNNs, Adam 1e-3, batch 128, 2 epochs."""

from experiments import app
from experiments import cnn_mnist


def get_config(preset="default"):
  return app.preset({"default": cnn_mnist.Config}, preset)
