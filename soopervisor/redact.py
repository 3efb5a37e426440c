"""Replace secret values with ``***`` in container output, also when streamed.

Every character covered by any occurrence of any secret is masked; occurrences
may overlap (``aa`` in ``aaaa``, ``abc`` and ``bcd`` in ``abcd``). Covered runs
that overlap or touch are merged and each merged run becomes one ``***``, so
the output does not reveal how many secrets, or which, were printed.

Output arrives in chunks cut anywhere, also inside a secret. A stream holds
back only the shortest tail that could still start a secret, so a live view
lags as little as possible, and its output is the same however the text was
chunked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

MASK = "***"


class Redactor:
    """The set of secret values one run must never show."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # a tuple replaced as a whole on add, so a stream reading it from
        # another thread always sees a consistent set
        self._secrets: tuple[str, ...] = ()
        self._subscribers: tuple[Callable[[str], None], ...] = ()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Register a value; empty strings are ignored (they would mask everything)."""
        if not isinstance(secret, str):
            # the message must not contain the value
            raise TypeError(f"a secret must be a str, not {type(secret).__name__}")
        if secret and secret not in self._secrets:
            self._secrets = self._secrets + (secret,)
            for tell in self._subscribers:
                tell(secret)

    def subscribe(self, tell: Callable[[str], None]) -> None:
        """Call ``tell(value)`` for every value registered, now and later.

        GitHub Actions uses it to send ``::add-mask::`` for a credential the
        moment it is known (a refreshed access token), before anything prints.
        """
        self._subscribers = self._subscribers + (tell,)
        for secret in self._secrets:
            tell(secret)

    def unsubscribe(self, tell: Callable[[str], None]) -> None:
        self._subscribers = tuple(t for t in self._subscribers if t != tell)  # bound methods are equal, not identical

    @property
    def secrets(self) -> tuple[str, ...]:
        """The registered values, in order; for checks, never for output."""
        return self._secrets

    def redact(self, text: str) -> str:
        """Mask a text that is complete, e.g. an error message."""
        secrets = self._secrets
        if not secrets or not text:
            return text
        out, _ = _mask(text, _occurrences(text, secrets), -1, len(text))
        return "".join(out)

    def stream(self) -> RedactingStream:
        """A new stream; secrets added here later apply to what it is fed afterwards."""
        return RedactingStream(self)

    def __repr__(self) -> str:
        n = len(self._secrets)
        return f"<Redactor {n} secret{'s' if n != 1 else ''}>"


class RedactingStream:
    """Masks text fed in chunks cut anywhere, one stream per output channel."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        # text not yet emitted: only what could still be part of a secret
        self._buf = ""
        # a run whose ``***`` was already emitted covers self._buf[:self._open];
        # an occurrence starting at or before this index joins that run.
        # -1: no such run (a run that ended before the buffer cannot be joined)
        self._open = -1

    def feed(self, chunk: str) -> str:
        """Return the text that is safe to emit now; keep back what may be a secret."""
        if not self._buf and self._open < 0 and not self._redactor._secrets:
            return chunk
        self._buf += chunk
        return self._process(final=False)

    def flush(self) -> str:
        """End of stream: return the rest, masked, and start afresh."""
        out = self._process(final=True)
        self._buf, self._open = "", -1
        return out

    def _process(self, final: bool) -> str:
        buf = self._buf
        secrets = self._redactor._secrets
        # a secret may start at `hold` or later, so nothing from there on is
        # final; everything before is
        hold = len(buf) if final else _hold_start(buf, secrets)
        occurrences = _occurrences(buf, secrets) if secrets else []
        out, end = _mask(buf, occurrences, self._open, hold)
        # a run reaching `hold` can be extended by an occurrence starting
        # there: its ``***`` is out already, remember it is still open
        self._open = end - hold if end >= hold else -1
        self._buf = buf[hold:]
        return "".join(out)

    def __repr__(self) -> str:
        # the buffer may hold the beginning of a secret
        return f"<RedactingStream holding {len(self._buf)} chars>"


def _occurrences(text: str, secrets: tuple[str, ...]) -> list[tuple[int, int]]:
    """Every (start, end) of every secret, overlapping ones included, by start."""
    found = []
    for secret in secrets:
        n = len(secret)
        i = text.find(secret)
        while i != -1:
            found.append((i, i + n))
            # advance by one, not by len(secret): occurrences may overlap
            i = text.find(secret, i + 1)
    found.sort()
    return found


def _mask(text: str, occurrences: list[tuple[int, int]], open_end: int, hold: int) -> tuple[list[str], int]:
    """Masked text[:hold] as pieces, and the end of the last run.

    ``open_end`` >= 0: text[:open_end] continues a run whose mask was already
    emitted. Occurrences starting at or after ``hold`` are left for later.
    """
    out: list[str] = []
    end = open_end
    for start, stop in occurrences:
        if start >= hold:
            break
        if start <= end:  # overlaps or touches the current run
            end = max(end, stop)
            continue
        out.append(text[max(end, 0) : start])
        out.append(MASK)
        end = stop
    if end < hold:
        out.append(text[max(end, 0) : hold])
    return out, end


def _hold_start(buf: str, secrets: tuple[str, ...]) -> int:
    """Earliest p such that buf[p:] is a proper prefix of a secret, else len(buf)."""
    n = len(buf)
    hold = n
    for secret in secrets:
        first = secret[0]
        # buf[i:] is shorter than the secret from this index on
        i = buf.find(first, max(0, n - len(secret) + 1), hold)
        while i != -1:
            if secret.startswith(buf[i:]):
                hold = i
                break
            i = buf.find(first, i + 1, hold)
    return hold


#: credential values this process holds (cloud tokens, keys): every run's
#: redactor, the CLI's errors and the Jupyter server's answers mask them too
CREDENTIALS = Redactor()
