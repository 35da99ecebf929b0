"""A file an upstream system dropped in a landing zone, local or in S3, read the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO, Callable


@dataclass(frozen=True)
class LandedFile:
    """One file an upstream system dropped: a local path or an S3 object, read the same way."""

    name: str
    uri: str
    etag: str = ""
    modified: float = field(default=0.0, compare=False)
    """When it landed (its last modification), in seconds since the epoch; 0 when not known."""
    _open: Callable[[], IO[bytes]] | None = field(default=None, compare=False, repr=False)

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    def open(self) -> IO[bytes]:
        return self._open()
