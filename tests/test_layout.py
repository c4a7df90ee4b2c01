"""Source layout: backend checks live in avjax/ops/policy.py only, never in model code."""

from __future__ import annotations

import pathlib

import avjax

PACKAGE = pathlib.Path(avjax.__file__).parent


def _files_naming(folder: str, text: str) -> list[str]:
  return sorted(str(path.relative_to(PACKAGE)) for path in (PACKAGE / folder).rglob("*.py")
                if text in path.read_text(encoding="utf-8"))


def test_models_never_ask_for_the_backend():
  assert list((PACKAGE / "models").rglob("*.py"))
  assert _files_naming("models", "default_backend") == []


def test_ops_ask_for_the_backend_in_the_policy_only():
  assert _files_naming("ops", "default_backend") == ["ops/policy.py"]
