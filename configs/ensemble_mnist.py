"""``experiments.ensemble_mnist`` (E1, ``make run``): the published pool of 10 MLPs."""

from experiments import app
from experiments import ensemble_mnist


def get_config(preset="default"):
  return app.preset({"default": ensemble_mnist.Config}, preset)
