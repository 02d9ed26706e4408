"""Convolution as patches and one matmul, so that ``vmap`` over members never makes a grouped
convolution.

Under ``jax.vmap`` over ensemble members, a convolution whose kernel is batched becomes one
grouped convolution (``feature_group_count=E``), which XLA:CPU runs ~35x slower than the
members' convolutions one after another (jax issue 26568; measured in
``benchmarks/ensemble_train.py``). Written as strided slices of the padded input (the
patches) followed by one ``dot_general``, the same convolution batches into a batched matmul;
its gradient is slices, pads and matmuls too, so no custom rule is needed.
"""

import contextlib

import jax.numpy as jnp
import numpy as np
from jax import lax


def patch_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
               dimension_numbers=None, feature_group_count=1, batch_group_count=1,
               precision=None, preferred_element_type=None):
  """``lax.conv_general_dilated`` as patches and a matmul (same signature and result).

  Grouped convolutions and input dilation fall back to ``lax.conv_general_dilated``.
  """
  if (feature_group_count != 1 or batch_group_count != 1
      or (lhs_dilation is not None and any(d != 1 for d in lhs_dilation))):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type)
  n_spatial = lhs.ndim - 2
  numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  # To (N, spatial..., C) inputs and (spatial..., I, O) kernels.
  x = jnp.transpose(lhs, (numbers.lhs_spec[0], *numbers.lhs_spec[2:], numbers.lhs_spec[1]))
  w = jnp.transpose(rhs, (*numbers.rhs_spec[2:], numbers.rhs_spec[1], numbers.rhs_spec[0]))
  window = w.shape[:n_spatial]
  strides = tuple(window_strides)
  dilation = tuple(rhs_dilation) if rhs_dilation is not None else (1,) * n_spatial
  if isinstance(padding, str):
    dilated = tuple((k - 1) * d + 1 for k, d in zip(window, dilation))
    padding = lax.padtype_to_pads(x.shape[1:-1], dilated, strides, padding)
  x = lax.pad(x, jnp.zeros((), x.dtype),
              ((0, 0, 0), *((lo, hi, 0) for lo, hi in padding), (0, 0, 0)))
  out_size = tuple((x.shape[1 + i] - (window[i] - 1) * dilation[i] - 1) // strides[i] + 1
                   for i in range(n_spatial))
  patches = []
  for offset in np.ndindex(*window):
    start = (0, *(o * d for o, d in zip(offset, dilation)), 0)
    limit = (x.shape[0], *(s + (n - 1) * st + 1 for s, n, st in
                           zip(start[1:-1], out_size, strides)), x.shape[-1])
    patches.append(lax.slice(x, start, limit, (1, *strides, 1)))
  patches = jnp.concatenate(patches, axis=-1)  # (N, out..., window * C)
  y = lax.dot_general(patches, w.reshape(-1, w.shape[-1]),
                      (((patches.ndim - 1,), (0,)), ((), ())), precision=precision,
                      preferred_element_type=preferred_element_type)
  order = (numbers.out_spec[0], *numbers.out_spec[2:], numbers.out_spec[1])
  return jnp.transpose(y, tuple(np.argsort(order)))


@contextlib.contextmanager
def linen_patch_convs():
  """While tracing inside this context, every ``flax.linen`` convolution that chose no
  implementation of its own (``conv_general_dilated``) runs ``patch_conv``."""
  import flax.linen as linen

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if (context.method_name != "__call__" or not isinstance(module, linen.linear._Conv)
        or module.conv_general_dilated is not None
        or module.conv_general_dilated_cls is not None):
      return next_fun(*args, **kwargs)
    # Linen modules are frozen dataclasses; the field is set for this call only.
    object.__setattr__(module, "conv_general_dilated", patch_conv)
    try:
      return next_fun(*args, **kwargs)
    finally:
      object.__setattr__(module, "conv_general_dilated", None)

  with linen.intercept_methods(interceptor):
    yield
