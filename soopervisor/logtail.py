"""Following a log file that may still be growing: each complete line once, from any line on."""
from __future__ import annotations

from pathlib import Path


class LogTail:
    """New complete lines of a log file that may still be growing.

    ``start`` skips that many lines, so a client that reconnects with the
    index of the next line it needs gets each line exactly once.
    """

    def __init__(self, path: str | Path, start: int = 0) -> None:
        self.path = Path(path)
        self.next = max(0, start)  # index of the next line read() returns
        self._offset = 0
        self._partial = b""
        self._skip = self.next

    def read(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        if not data:
            return []
        self._offset += len(data)
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()  # an unfinished line waits for its newline
        lines = [c.decode("utf-8", errors="replace") + "\n" for c in chunks]
        if self._skip:
            dropped = min(self._skip, len(lines))
            self._skip -= dropped
            lines = lines[dropped:]
        self.next += len(lines)
        return lines
