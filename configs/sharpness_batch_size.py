"""``experiments.sharpness_batch_size`` (E4): Keskar et al.'s F1, small against large batches.

Presets:
  cpu (default): the reduced-scale run, 15 epochs per regime and ``f`` in the sharpness over
    the first 10,000 training images; 89 minutes on 2 shared CPU cores with the protocol
    comparison, which ``--config.compare_protocols=False`` skips.
  gpu: the full protocol, 100 epochs per regime (23,400 SB and 1,000 LB steps; the paper
    trains until the loss stops improving) and ``f`` over all 60,000 training images.
"""

from experiments import app
from experiments import sharpness_batch_size as e4


def get_config(preset="cpu"):
  return app.preset({
      "cpu": e4.Config,
      "gpu": lambda: e4.Config(small_batch_epochs=e4.FULL_PROTOCOL_EPOCHS,
                               large_batch_epochs=e4.FULL_PROTOCOL_EPOCHS,
                               sharpness_n_train=None),
  }, preset)
