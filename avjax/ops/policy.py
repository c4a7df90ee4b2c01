"""Which form of each backend-specific kernel runs: one switch per op family, in one place.

Families and their forms (every form of a family computes the same values, to float rounding):

  depthwise_conv1d  'shifted' (K shifted products; 'auto' on CPUs) | 'grouped' (XLA's grouped
                    convolution; 'auto' elsewhere)
  conv_transpose    'col2im' (one matrix product and an overlap-add; 'auto' on CPUs) | 'lax'
                    (lax.conv_transpose, cuDNN's kernels on GPUs; 'auto' elsewhere)
  max_pool          'shifts' (9 strided shifts, first-maximum gradient; 'auto' everywhere) |
                    'reduce_window' (lax.reduce_window and XLA's select-and-scatter gradient)
  attention         'xla' | 'cudnn' | 'blocked' ('auto': `_auto_attention`, by backend, dtype, size)
  dropout_rng       'rbg' (XLA's RngBitGenerator; 'auto' everywhere) | 'default' (JAX's default
                    PRNG, threefry unless configured otherwise)

A kernel asks `resolve(family, choice)`: a `choice` other than 'auto' wins (a per-call `form`
argument, or VAT's `config.model.vat.attention`); else the form forced for the family with `force`
or `set_forms`; else the backend's rule below. `backend()` is the only call of
`jax.default_backend()` in avjax/ops and avjax/models.

    with avjax.ops.force(depthwise_conv1d="grouped", attention="blocked"):
      loss = jax.jit(loss_fn)(params, batch)   # traced (and compiled) with those forms
    avjax.ops.set_forms(conv_transpose="lax")  # process-wide, until set back to "auto"

Forms are chosen when a function is traced: a jitted function keeps the forms of its first trace
for those input shapes, so force them before it is traced (a fresh `jax.jit`). The setting is
process-wide, not per thread.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import jax
import jax.numpy as jnp

AUTO = "auto"
FORMS: dict[str, tuple[str, ...]] = {
    "depthwise_conv1d": ("shifted", "grouped"),
    "conv_transpose": ("col2im", "lax"),
    "max_pool": ("shifts", "reduce_window"),
    "attention": ("xla", "cudnn", "blocked"),
    "dropout_rng": ("rbg", "default"),
}
BLOCKED_MIN_SCORES = 512 * 512  # 'auto' attention on CPU: blocked from this many scores per head.

_forced: dict[str, str] = {}  # family -> form; families left to 'auto' are absent.


def backend() -> str:
  """The default JAX backend ('cpu', 'gpu', 'tpu'), which the 'auto' rules read."""
  return jax.default_backend()


def _auto_depthwise_conv1d(on: str) -> str:
  """XLA:CPU runs the grouped convolution ~3x slower forward + backward (and inside a scanned,
  recomputed block its gradients fell to a naive loop); the shifted products need ~25% more step
  buffers, so accelerators keep the convolution."""
  return "grouped" if on != "cpu" else "shifted"


def _auto_conv_transpose(on: str) -> str:
  """XLA:CPU computes lax.conv_transpose's kernel gradient ~15x slower than a plain convolution's
  and narrow convolutions at a few GFLOP/s; elsewhere lax.conv_transpose (cuDNN on GPUs)."""
  return "col2im" if on == "cpu" else "lax"


def _auto_max_pool(on: str) -> str:
  """The shifts everywhere: select-and-scatter is slow on XLA:CPU and uses atomics on GPUs."""
  del on
  return "shifts"


def _auto_dropout_rng(on: str) -> str:
  """'rbg' everywhere: threefry's unrolled rounds per dropout mask triple compile time on CPU."""
  del on
  return "rbg"


def _auto_attention(on: str, dtype: jnp.dtype = jnp.float32, head_dim: int = 64,
                    num_scores: int = 0) -> str:
  """cuDNN's fused (flash) attention on GPUs for bfloat16 / float16 and head dims it takes
  (multiples of 8 up to 128), where it never materialises the (N, M) score matrices; on CPUs,
  'blocked' when a head has at least BLOCKED_MIN_SCORES scores (N x M); else XLA's."""
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  fits = head_dim % 8 == 0 and head_dim <= 128
  if half and fits and on == "gpu":
    return "cudnn"
  return "blocked" if on == "cpu" and num_scores >= BLOCKED_MIN_SCORES else "xla"


_RULES: dict[str, Callable[..., str]] = {
    "depthwise_conv1d": _auto_depthwise_conv1d,
    "conv_transpose": _auto_conv_transpose,
    "max_pool": _auto_max_pool,
    "attention": _auto_attention,
    "dropout_rng": _auto_dropout_rng,
}


def _check(family: str, form: str) -> None:
  if family not in FORMS:
    raise ValueError(f"Unknown op family {family!r}; known: {sorted(FORMS)}.")
  if form != AUTO and form not in FORMS[family]:
    raise ValueError(f"{family}={form!r} is not one of {(AUTO,) + FORMS[family]}.")


def resolve(family: str, choice: str = AUTO, **facts) -> str:
  """The form of `family` to run: `choice` unless it is 'auto'; else the forced form; else the
  backend's rule, given `facts` (attention: dtype, head_dim, num_scores)."""
  _check(family, choice)
  if choice != AUTO:
    return choice
  if family in _forced:
    return _forced[family]
  return _RULES[family](backend(), **facts)


def set_forms(**forms: str) -> dict[str, str]:
  """Forces a form per family (keyword: family name; 'auto' drops the override), process-wide.
  Returns the previous settings ('auto' where none), which `set_forms(**previous)` restores."""
  for family, form in forms.items():
    _check(family, form)
  previous = {family: _forced.get(family, AUTO) for family in forms}
  for family, form in forms.items():
    if form == AUTO:
      _forced.pop(family, None)
    else:
      _forced[family] = form
  return previous


@contextlib.contextmanager
def force(**forms: str) -> Iterator[None]:
  """`set_forms(**forms)` for the duration of a `with` block, then the previous settings."""
  previous = set_forms(**forms)
  try:
    yield
  finally:
    set_forms(**previous)


def forced_forms() -> dict[str, str]:
  """The families whose form is forced now, and their forms."""
  return dict(_forced)
