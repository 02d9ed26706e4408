"""``experiments.regularisers_mnist``: every regulariser of ``jaxens.nn`` on E1's MLP, five
seeds each, as vmapped ensembles."""

from experiments import app
from experiments import regularisers_mnist


def get_config(preset="default"):
  return app.preset({"default": regularisers_mnist.Config}, preset)
