"""The trainer settings that the experiments expose as flat, overridable config fields."""

import dataclasses

from jaxens import ensemble


@dataclasses.dataclass
class Training:
  """``--config.<field>`` settings of ``jaxens.ensemble.train``; the trainer checks them.

  Attributes:
    n_members: ensemble members, trained as one vmapped program.
    batch_size: examples per step.
    epochs: passes over the training set.
    optimizer: a ``jaxens.optim`` name (``adam``, ``momentum``, ...).
    learning_rate: the optimizer's learning rate, the same for every member.
    seed: member ``i`` starts from ``fold_in(PRNGKey(seed), i)``.
  """
  n_members: int = 10
  batch_size: int = 32
  epochs: int = 3
  optimizer: str = "adam"
  learning_rate: float = 1e-3
  seed: int = 0

  def train_config(self, model, **kwargs):
    """The ``TrainConfig`` of these settings for ``model``; ``kwargs`` set the rest."""
    return ensemble.TrainConfig(
        model=model, optimizer=self.optimizer,
        optimizer_kwargs={"learning_rate": self.learning_rate}, n_members=self.n_members,
        batch_size=self.batch_size, epochs=self.epochs, seed=self.seed, **kwargs)
