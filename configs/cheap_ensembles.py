"""``experiments.cheap_ensembles``: snapshot ensembles, FGE and SWA against independent
members at equal compute on E1's MLP; ``gpu``: 10 epochs per model and 10 seeds."""

from experiments import app
from experiments import cheap_ensembles


def get_config(preset="default"):
  return app.preset({"default": cheap_ensembles.Config, "gpu": cheap_ensembles.gpu}, preset)
