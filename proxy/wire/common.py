"""Message shapes shared by both directions (PostgreSQL protocol chapter, "Message Formats").

``EmptyMessage`` is the base of the messages that are a type byte and nothing else; CopyData and
CopyDone have the same layout whichever side sends them, so ``frontend`` and ``backend`` both
export these classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from proxy.wire.codec import Reader, frame


@dataclass(frozen=True, slots=True)
class EmptyMessage:
    """A message with no payload; subclasses set ``TYPE``. ``decode`` raises ProtocolViolation
    (08P01) when a payload is present."""

    TYPE: ClassVar[bytes] = b"?"

    def encode(self) -> bytes:
        return frame(self.TYPE, b"")

    @classmethod
    def decode(cls, payload: bytes):
        Reader(payload).end()
        return cls()


@dataclass(frozen=True, slots=True)
class CopyDone(EmptyMessage):
    """CopyDone ('c'): end of COPY data, from either side."""

    TYPE: ClassVar[bytes] = b"c"


@dataclass(frozen=True, slots=True)
class CopyData:
    """CopyData ('d'): a chunk of COPY data (same layout in both directions)."""

    TYPE: ClassVar[bytes] = b"d"
    data: bytes

    def encode(self) -> bytes:
        return frame(self.TYPE, self.data)

    @classmethod
    def decode(cls, payload: bytes) -> "CopyData":
        return cls(bytes(payload))
