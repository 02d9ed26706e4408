"""End-to-end run of the Flax CNN ensemble on generated MNIST-layout data."""

import dataclasses

import jax
import numpy as np

from experiments import cnn_mnist
from jaxens import data as data_lib
from jaxens import ensemble


def _tiny(npz):
  return cnn_mnist.Config(data_source="npz", data_dir=str(npz), val_fraction=0.2, n_members=3,
                          epochs=3, batch_size=32)


def test_cnn_ensemble_member_equals_its_single_run(digits_npz, tmp_path):
  config = _tiny(digits_npz(n_train=480, n_test=64))
  summary = cnn_mnist.run(config, str(tmp_path))
  assert len(summary["member_test_accuracy"]) == 3
  # The labels are learnable from the pixels: every member's validation loss falls.
  val_loss = np.asarray(summary["history"]["val_loss"])
  assert (val_loss[:, -1] < val_loss[:, 0]).all()
  one_epoch = dataclasses.replace(config.train_config(), epochs=1)
  splits = cnn_mnist.as_images(data_lib.load_mnist("npz", 0.2, 0, config.data_dir))
  assert splits.train.x.shape == (384, 28, 28, 1)
  full = ensemble.train(one_epoch, splits, progress=False)
  alone = ensemble.train(one_epoch, splits, members=[2], progress=False)
  for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(alone.params)):
    np.testing.assert_allclose(np.asarray(a)[2], np.asarray(b)[0], atol=1e-5)
