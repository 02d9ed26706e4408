"""jaxens: vectorised ensemble studies in JAX.

Modules: ``data`` (MNIST), ``nn`` (pure-function MLPs), ``losses`` (shared metrics), ``models``
(the model protocol and its adapters), ``optim``
(six optimizers from their equations), ``schedules`` (learning-rate schedules from their
papers), ``ensemble`` (vmap x scan training), ``select`` (greedy ensemble selection),
``sharpness`` and ``landscape`` (loss-surface measures).
"""

from jaxens import data
from jaxens import ensemble
from jaxens import landscape
from jaxens import losses
from jaxens import models
from jaxens import nn
from jaxens import optim
from jaxens import schedules
from jaxens import select
from jaxens import sharpness

__version__ = "0.1.0"
