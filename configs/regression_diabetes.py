"""``experiments.regression_diabetes``: 10 MLPs (10-64-64-1), MSE, Adam 1e-3, 200 epochs."""

from experiments import app
from experiments import regression_diabetes


def get_config(preset="default"):
  return app.preset({"default": regression_diabetes.Config}, preset)
