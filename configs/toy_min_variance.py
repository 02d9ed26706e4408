"""``experiments.toy_min_variance`` (E1 toy): 10 models, 10,000 samples, 1000 greedy steps."""

from experiments import app
from experiments import toy_min_variance


def get_config(preset="default"):
  return app.preset({"default": toy_min_variance.Config}, preset)
