"""A small timm-style registry: register factories by name, create them by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from research_systems_core.validation import check_choice

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["Registry"]


class Registry:
    """Name -> factory mapping; ``@REG.register("name")`` adds one, ``REG.create(name, **kw)`` builds it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None) -> Callable[[F], F]:
        def decorator(fn: F) -> F:
            key = name or fn.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = fn
            return fn

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        check_choice(self.kind, name, self._entries)
        return self._entries[name]

    def create(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
