"""Evaluators, registered by name in EVALUATORS and configured per run in `config.evals`.

Every module of this package is imported here, so a new evaluator is one file.
"""

import importlib
import pkgutil

from avjax.evaluators.base import (EVALUATORS, EvalContext, Evaluator, Predicting, build, outputs,
                                   report, validate, write)

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
  importlib.import_module(f"{__name__}.{_module}")  # Registers the module's evaluators.

__all__ = ["EVALUATORS", "EvalContext", "Evaluator", "Predicting", "build", "outputs", "report",
           "validate", "write"]
