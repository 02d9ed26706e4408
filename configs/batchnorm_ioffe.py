"""``experiments.batchnorm_ioffe``: Ioffe & Szegedy's 3 x 100 sigmoid MNIST net, 50,000 SGD
steps of batch 60, without BN, with BN before and after the sigmoid, 5 seeds each."""

from experiments import app
from experiments import batchnorm_ioffe


def get_config(preset="default"):
  # The default already runs the paper's 50,000 steps, so ``gpu`` is the same run.
  return app.preset({"default": batchnorm_ioffe.Config, "gpu": batchnorm_ioffe.Config}, preset)
