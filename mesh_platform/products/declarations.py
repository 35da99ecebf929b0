"""What a domain declares: one :class:`Declaration` per ``@domain.product`` or ``@domain.asset``."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from mesh_platform.products.ports import InputPort


@dataclass
class Declaration:
    """What a domain declares with ``@domain.product`` or ``@domain.asset``."""

    name: str
    fn: Callable[..., Any]
    inputs: dict[str, InputPort | str] = field(default_factory=dict)
    kinds: tuple[str, ...] = ()
    required_resource_keys: frozenset[str] = frozenset()
    is_product: bool = True
    description: str | None = None
    declared_in: str | None = None
    is_shim: bool = False  # serves a previous major of a product from its current data
    refresh: str | None = None  # a cron: rebuilt on it (when its inputs changed), not on every input update

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    @property
    def wants_context(self) -> bool:
        return "context" in inspect.signature(self.fn).parameters


@dataclass(frozen=True)
class NotYet:
    """What a private intermediate's transform returns when its inputs do not allow a build yet (a
    model with too few labels): the step succeeds and stores nothing; the reason is logged. The last
    stored version, if any, stays; what reads it waits for one."""

    reason: str


__all__ = ["Declaration", "NotYet"]
