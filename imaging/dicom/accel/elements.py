"""The two pieces every hand-made encoding here is built of (PS3.5 7.1.3, 6.2: values of even
length; PS3.7 6.3.1: command sets in Implicit VR Little Endian)."""

from __future__ import annotations

import struct


def pad(value: bytes, padding: bytes) -> bytes:
    """A value made even: UIDs with a NUL, other strings with a space (PS3.5 6.2)."""
    return value + padding if len(value) % 2 else value


def implicit(group: int, element: int, value: bytes) -> bytes:
    """One element in Implicit VR Little Endian: tag, 4-byte length, value (PS3.5 7.1.3)."""
    return struct.pack("<HHI", group, element, len(value)) + value
