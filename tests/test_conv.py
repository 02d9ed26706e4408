"""patch_conv equals lax.conv_general_dilated, alone, under grad and vmap over kernels."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxens import _conv
from jaxens import models

CASES = [
    dict(window_strides=(1, 1), padding="SAME"),
    dict(window_strides=(2, 1), padding="VALID"),
    dict(window_strides=(1, 2), padding=((1, 2), (0, 1)), rhs_dilation=(2, 1)),
]


def _arrays(batch=(), seed=0):
  x = jax.random.normal(jax.random.PRNGKey(seed), batch + (2, 7, 6, 3))
  w = jax.random.normal(jax.random.PRNGKey(seed + 1), batch + (3, 2, 3, 4))
  return x, w


@pytest.mark.parametrize("case", CASES)
def test_patch_conv_equals_the_native_convolution(case):
  numbers = ("NHWC", "HWIO", "NHWC")
  native = lambda x, w: lax.conv_general_dilated(x, w, dimension_numbers=numbers, **case)
  patched = lambda x, w: _conv.patch_conv(x, w, dimension_numbers=numbers, **case)
  x, w = _arrays()
  np.testing.assert_allclose(patched(x, w), native(x, w), rtol=1e-5, atol=1e-5)
  loss = lambda conv: lambda x, w: jnp.sum(jnp.sin(conv(x, w)))
  for got, expected in zip(jax.grad(loss(patched), (0, 1))(x, w),
                           jax.grad(loss(native), (0, 1))(x, w)):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  xs, ws = _arrays(batch=(3,))
  np.testing.assert_allclose(jax.vmap(patched)(xs, ws), jax.vmap(native)(xs, ws), rtol=1e-5,
                             atol=1e-5)


def test_nchw_layout_and_grouped_fallback():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 6, 6))
  kwargs = dict(window_strides=(1, 1), padding="SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
  w = jax.random.normal(jax.random.PRNGKey(1), (6, 4, 3, 3))
  np.testing.assert_allclose(_conv.patch_conv(x, w, **kwargs),
                             lax.conv_general_dilated(x, w, **kwargs), rtol=1e-5, atol=1e-5)
  grouped = dict(kwargs, feature_group_count=2)
  np.testing.assert_array_equal(_conv.patch_conv(x, w[:, :2], **grouped),
                                lax.conv_general_dilated(x, w[:, :2], **grouped))


class _Net(linen.Module):
  @linen.compact
  def __call__(self, x, train):
    return linen.Conv(4, (3, 3))(x).sum(axis=(1, 2))


def test_linen_conv_runs_as_patches_only_when_asked():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 1))
  outputs, programs = {}, {}
  for conv in ("patches", "native"):
    model = models.from_linen(_Net(), conv=conv)
    params, state = model.init(jax.random.PRNGKey(1), x)
    forward = lambda p: model.apply(p, state, x, train=False)[0]
    outputs[conv] = forward(params)
    programs[conv] = jax.jit(forward).lower(params).as_text()
  np.testing.assert_allclose(outputs["patches"], outputs["native"], rtol=1e-5, atol=1e-5)
  assert "convolution" in programs["native"] and "convolution" not in programs["patches"]
  with pytest.raises(ValueError, match="conv"):
    models.from_linen(_Net(), conv="im2col")
