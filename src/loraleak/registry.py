"""One registry type for everything looked up by name: attacks, presets, tasks, text variants.

A `Registry` is a read-only mapping with one way in (`register`, which refuses a name twice) and
one way to fail (`UnknownName`, a user error that says "did you mean ..." and where to look).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Generic, TypeVar

from .errors import UserError

T = TypeVar("T")


class UnknownName(UserError, KeyError):
    """A name no registry holds. A KeyError too, so `Mapping.get` and `in` behave as for a dict."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Mapping[str, T], Generic[T]):
    """Items of one kind by name, in registration order.

    kind: what an item is, for messages ("attack"); listing: where a user sees them all.
    """

    def __init__(self, kind: str, listing: str = ""):
        self.kind, self.listing = kind, listing
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = item
        return item

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownName(self.unknown(name)) from None

    def unknown(self, name: str, also: Iterable[str] = ()) -> str:
        """The message for a name that is not here (`also`: further names the user could have meant)."""
        near = difflib.get_close_matches(str(name), [*self._items, *also], n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        return f"unknown {self.kind} '{name}'{hint}" + (f" ({self.listing})" if self.listing else "")

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind}: {', '.join(self._items)})"

    @contextmanager
    def restored(self) -> Iterator[Registry[T]]:
        """Whatever is registered inside the block is gone after it (for tests)."""
        saved = dict(self._items)
        try:
            yield self
        finally:
            self._items = saved
