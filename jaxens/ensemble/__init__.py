"""Train and evaluate a whole ensemble of any model as one jitted program.

Every epoch is one compiled call: a ``lax.scan`` over the minibatches whose body ``vmap``s a
single-member training step over the E members. Member ``i`` draws everything (initial
weights, data order, dropout) from ``fold_in(PRNGKey(seed), i)``, so it trains identically
alone (``members=[i]``) or inside any ensemble. The member axis is axis 0 of every leaf and is
sharded over the available devices.

Example::

  splits = jaxens.data.load_mnist()
  cfg = TrainConfig(MLPConfig(), n_members=10)
  result = train(cfg, splits)
  probs = predict(cfg, result.best_params, result.best_state, splits.test[0])  # (10, N, 10)

One module a concern: ``_config`` (what ``train`` takes and returns), ``_inputs`` (eager
checks), ``_tasks`` (losses and metrics), ``_keys`` (random streams, data order), ``_step``
(one member's step, divergence), ``_evaluate`` (evaluation, ``predict``), ``_programs`` (the
compiled init and epoch), ``_mesh`` (devices and padding), ``_progress`` (the bar),
``_checkpoint`` (orbax, fingerprint, ``load``) and ``_train`` (the loop).
"""

from jaxens.ensemble._checkpoint import load
from jaxens.ensemble._config import DATA_ORDERS
from jaxens.ensemble._config import KEEP
from jaxens.ensemble._config import TrainConfig
from jaxens.ensemble._config import TrainResult
from jaxens.ensemble._evaluate import eval_loss
from jaxens.ensemble._evaluate import evaluate
from jaxens.ensemble._evaluate import predict
from jaxens.ensemble._keys import member_key
from jaxens.ensemble._mesh import MEMBER_AXIS
from jaxens.ensemble._mesh import members_mesh
from jaxens.ensemble._programs import compiler_options
from jaxens.ensemble._step import resolve_optimizer
from jaxens.ensemble._stream import predict_true_class
from jaxens.ensemble._tasks import LOSSES
from jaxens.ensemble._train import train

__all__ = (
    "DATA_ORDERS",
    "KEEP",
    "LOSSES",
    "MEMBER_AXIS",
    "TrainConfig",
    "TrainResult",
    "compiler_options",
    "eval_loss",
    "evaluate",
    "load",
    "member_key",
    "members_mesh",
    "predict",
    "predict_true_class",
    "resolve_optimizer",
    "train",
)
