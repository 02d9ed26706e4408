"""``experiments.regularisation_mnist`` (E2): the chapter's three regularisation runs of the
784-2048-1024-1024-10 MLP; ``gpu``: the published 200 epochs with three seeds."""

from experiments import app
from experiments import regularisation_mnist


def get_config(preset="default"):
  return app.preset({"default": regularisation_mnist.Config, "gpu": regularisation_mnist.gpu},
                    preset)
