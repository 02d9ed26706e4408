"""Six optimizers written from their equations, as optax gradient transformations.

Momentum, Nesterov, RMSProp, Adam, AdaGrad and AdaDelta: each a ``scale_by_*``
building block with a NamedTuple state, and an alias that chains the learning rate
(a float, a schedule, or one traced value per ensemble member under ``jax.vmap``).
Plus the legacy Keras ``decay`` schedule, annealed gradient noise, and the table of
each optimizer's exact optax, torch.optim and Keras 3 equivalents (``EQUIVALENTS``).
"""

from jaxens.optim._alias import adadelta
from jaxens.optim._alias import adagrad
from jaxens.optim._alias import adam
from jaxens.optim._alias import momentum
from jaxens.optim._alias import nesterov
from jaxens.optim._alias import rmsprop
from jaxens.optim._equivalents import EQUIVALENTS
from jaxens.optim._equivalents import Equivalent
from jaxens.optim._equivalents import equivalent
from jaxens.optim._equivalents import equivalent_row
from jaxens.optim._equivalents import equivalents_table
from jaxens.optim._equivalents import optax_keras_adam
from jaxens.optim._equivalents import optax_lr_in_buffer_momentum
from jaxens.schedules import inverse_time_decay  # Its home is jaxens.schedules.
from jaxens.optim._transforms import AddGradientNoiseState
from jaxens.optim._transforms import ScaleByAdadeltaState
from jaxens.optim._transforms import ScaleByAdagradState
from jaxens.optim._transforms import ScaleByAdamState
from jaxens.optim._transforms import ScaleByLearningRateState
from jaxens.optim._transforms import ScaleByMomentumState
from jaxens.optim._transforms import ScaleByRmspropState
from jaxens.optim._transforms import add_gradient_noise
from jaxens.optim._transforms import scale_by_adadelta
from jaxens.optim._transforms import scale_by_adagrad
from jaxens.optim._transforms import scale_by_adam
from jaxens.optim._transforms import scale_by_learning_rate
from jaxens.optim._transforms import scale_by_momentum
from jaxens.optim._transforms import scale_by_nesterov
from jaxens.optim._transforms import scale_by_rmsprop

#: The optimizers that ``jaxens.ensemble.TrainConfig(optimizer=<name>)`` accepts by name.
OPTIMIZERS = ("momentum", "nesterov", "rmsprop", "adam", "adagrad", "adadelta")

__all__ = (
    "EQUIVALENTS",
    "OPTIMIZERS",
    "AddGradientNoiseState",
    "Equivalent",
    "ScaleByAdadeltaState",
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByLearningRateState",
    "ScaleByMomentumState",
    "ScaleByRmspropState",
    "adadelta",
    "adagrad",
    "adam",
    "add_gradient_noise",
    "equivalent",
    "equivalent_row",
    "equivalents_table",
    "inverse_time_decay",
    "momentum",
    "nesterov",
    "optax_keras_adam",
    "optax_lr_in_buffer_momentum",
    "rmsprop",
    "scale_by_adadelta",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_momentum",
    "scale_by_nesterov",
    "scale_by_rmsprop",
)
