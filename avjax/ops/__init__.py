"""Backend-specific kernels, each with one policy switch (avjax/ops/policy.py).

Models call these and never ask which backend runs them:

  conv.py       depthwise_conv1d ('shifted' | 'grouped'), conv_transpose_4x4_s2 ('col2im' | 'lax')
  pooling.py    max_pool_3x3_s2 ('shifts' | 'reduce_window')
  attention.py  attend ('xla' | 'cudnn' | 'blocked')
  dropout.py    fast_dropout_rngs ('rbg' | 'default')

'auto' picks a form from the backend (and, for attention, dtype and size); `force` / `set_forms`
override it for everything traced meanwhile:

    with avjax.ops.force(conv_transpose="lax", depthwise_conv1d="grouped"):
      ...
"""

from avjax.ops.attention import (ATTENTION_IMPLEMENTATIONS, attend, attention_implementation,
                                 blocked_attention, padded_attention)
from avjax.ops.conv import (col2im_conv_transpose, conv_transpose_4x4_s2, depthwise_conv1d,
                            shifted_products)
from avjax.ops.dropout import fast_dropout_rngs
from avjax.ops.policy import AUTO, FORMS, force, forced_forms, resolve, set_forms
from avjax.ops.pooling import max_pool_3x3_s2

__all__ = ["ATTENTION_IMPLEMENTATIONS", "AUTO", "FORMS", "attend", "attention_implementation",
           "blocked_attention", "col2im_conv_transpose", "conv_transpose_4x4_s2",
           "depthwise_conv1d", "fast_dropout_rngs", "force", "forced_forms", "max_pool_3x3_s2",
           "padded_attention", "resolve", "set_forms", "shifted_products"]
