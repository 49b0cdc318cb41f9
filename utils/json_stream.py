"""Reading the members of a large top-level JSON object one at a time (Ego4D's ``narration.json``).

``json.load`` holds the whole document (gigabytes of Python objects for millions of narrations);
:func:`iter_object_members` holds one member's value at a time plus a read buffer.
"""
from __future__ import annotations

import json
import os
from typing import Iterator

_WHITESPACE = " \t\n\r"


class _Buffer:
    def __init__(self, file, chunk_size: int):
        self.file, self.chunk_size = file, chunk_size
        self.text, self.pos, self.consumed, self.eof = "", 0, 0, False

    def more(self) -> bool:
        """Read another chunk (dropping what was parsed); False at the end of the file."""
        if self.eof:
            return False
        chunk = self.file.read(self.chunk_size)
        self.consumed += self.pos
        self.text, self.pos = self.text[self.pos:] + chunk, 0
        self.eof = not chunk
        return bool(chunk)

    def skip_space(self) -> str:
        """The next non-space character ('' at the end of the file)."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.text) or not self.more():
                return self.text[self.pos:self.pos + 1]

    def decode(self, decoder: json.JSONDecoder, path) -> object:
        """The JSON value at the cursor, reading more of the file until it is complete."""
        while True:
            try:
                value, end = decoder.raw_decode(self.text, self.pos)
                if end < len(self.text) or self.eof:  # a value that ends with the buffer may continue
                    self.pos = end
                    return value
            except json.JSONDecodeError as err:
                if self.eof:
                    raise ValueError(f"{path}: invalid JSON at character {self.consumed + err.pos}: {err.msg}") \
                        from None
            self.more()


def iter_object_members(path: str | os.PathLike, chunk_size: int = 1 << 20) -> Iterator[tuple[str, object]]:
    """``(key, value)`` of each member of the JSON object in ``path``, in file order."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as file:
        buffer = _Buffer(file, chunk_size)
        if buffer.skip_space() != "{":
            raise ValueError(f"{path}: expected a JSON object at the top level")
        buffer.pos += 1
        first = True
        while True:
            char = buffer.skip_space()
            if char == "}":
                return
            if not first:
                if char != ",":
                    raise ValueError(f"{path}: expected ',' or '}}' at character {buffer.consumed + buffer.pos}")
                buffer.pos += 1
                buffer.skip_space()
            key = buffer.decode(decoder, path)
            if not isinstance(key, str) or buffer.skip_space() != ":":
                raise ValueError(f"{path}: expected a \"key\": at character {buffer.consumed + buffer.pos}")
            buffer.pos += 1
            buffer.skip_space()
            yield key, buffer.decode(decoder, path)
            first = False
