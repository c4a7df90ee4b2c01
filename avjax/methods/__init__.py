"""Balancing methods, registered by name in METHODS (`config.method.name`)."""

from avjax.methods import auxformer  # noqa: F401  (registers)
from avjax.methods import baseline  # noqa: F401  (registers)
from avjax.methods import cmvqvae  # noqa: F401  (registers)
from avjax.methods import mmcosine  # noqa: F401  (registers)
from avjax.methods import ogm  # noqa: F401  (registers)
from avjax.methods import valuation  # noqa: F401  (registers)
from avjax.methods import vat  # noqa: F401  (registers)
from avjax.methods import vat_finetune  # noqa: F401  (registers)
from avjax.methods import vavl  # noqa: F401  (registers)
from avjax.methods.base import METHODS, Method, StepContext, cross_entropy

__all__ = ["METHODS", "Method", "StepContext", "cross_entropy"]
