"""Small name -> factory registries, so configs pick components by string.

A module registers its component at import time (`@METHODS.register('ogm_ge')`); the trainer looks it up
by the config's name, and an unknown name fails with the list of known ones.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterable, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
  """A configuration that cannot run; the message names the problem and the fix."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
  """' Did you mean 'x'?' for the closest known name, or ''."""
  close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
  return f" Did you mean {close[0]!r}?" if close else ""


class Registry(Generic[T]):
  """A mapping from lower_snake_case names to factories."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def decorator(obj: T) -> T:
      if name in self._entries:
        raise ValueError(f"{self.kind} {name!r} is registered twice.")
      self._entries[name] = obj
      return obj
    return decorator

  def get(self, name: str) -> T:
    if name not in self._entries:
      known = ", ".join(sorted(self._entries)) or "(none)"
      raise ConfigError(f"Unknown {self.kind} {name!r}.{did_you_mean(name, self._entries)} "
                        f"Known {self.kind}s: {known}.")
    return self._entries[name]

  def names(self) -> list[str]:
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries
