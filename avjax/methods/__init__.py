"""Balancing methods, registered by name in METHODS (`config.method.name`).

Every module of this package is imported here, so a new method is one file
(avjax/methods/<name>.py registering itself with `@METHODS.register(...)`), nothing else to edit.
"""

import importlib
import pkgutil

from avjax.methods.base import METHODS, Method, StepContext, cross_entropy

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
  importlib.import_module(f"{__name__}.{_module}")  # Registers the module's methods.

__all__ = ["METHODS", "Method", "StepContext", "cross_entropy"]
