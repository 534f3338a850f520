"""A tiny name -> factory registry (timm style) shared by losses, models and data sets."""
from __future__ import annotations

from typing import Callable, Dict, Generic, List, TypeVar

from .errors import ConfigError, allowed

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; ``get`` fails with the list of known names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; allowed: {allowed(self.names())}"
            ) from None

    def names(self) -> List[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self):
        """Names in registration order (``names()`` is sorted)."""
        return iter(list(self._items))
