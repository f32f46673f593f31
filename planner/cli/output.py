"""What the terminal receives: no raw control characters, and quiet ends on a closed pipe.

Names and paths come from users' files; a name holding an escape sequence must not recolour or
rewrite the user's terminal. Every character of C0/C1 control and bidirectional override
classes except newline and tab is written as a visible escape (\\x1b, \\u202e).
"""

from __future__ import annotations

from typing import TextIO

_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)] if c not in (0x09, 0x0A)}
_ESCAPES.update({c: f"\\u{c:04x}" for c in [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]})


def printable(text: str) -> str:
    """`text` with control and bidi-override characters escaped (newline and tab kept)."""
    return text.translate(_ESCAPES)


class SafeStream:
    """A text stream that escapes control characters on the way to the real one."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> int:
        text = printable(text)
        encoding = getattr(self.stream, "encoding", None) or "utf-8"
        # What the stream cannot encode (a lone surrogate; non-ASCII on an ASCII terminal) is
        # written as a \u escape rather than raising UnicodeEncodeError.
        text = text.encode(encoding, "backslashreplace").decode(encoding, "replace")
        self.stream.write(text)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)
