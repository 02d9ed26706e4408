"""``experiments.batchnorm_landscape``: Santurkar et al.'s learning rates, noisy BN, ICS and
landscape measures on an MNIST MLP (and the learning rates on a CNN); ``gpu``: longer, 5 seeds."""

from experiments import app
from experiments import batchnorm_landscape


def get_config(preset="default"):
  return app.preset({"default": batchnorm_landscape.Config, "gpu": batchnorm_landscape.gpu},
                    preset)
