"""Replace secret values with ``***`` in container output, also when streamed.

Secrets are matched on bytes: what the container wrote, before any decoding,
so a value holding a byte that is not UTF-8 (``$'abc\\xffdef'``) is masked
too. A str secret is matched as its UTF-8 bytes (the surrogate escapes of
``os.environ``/``os.fsdecode`` become the bytes they stand for).

Every byte covered by any occurrence of any secret is masked; occurrences
may overlap (``aa`` in ``aaaa``, ``abc`` and ``bcd`` in ``abcd``). Covered runs
that overlap or touch are merged and each merged run becomes one ``***``, so
the output does not reveal how many secrets, or which, were printed.

Output arrives in chunks cut anywhere, also inside a secret. A stream holds
back only the shortest tail that could still start a secret, so a live view
lags as little as possible, and its output is the same however the bytes
were chunked.

``redact(text)`` masks a complete str (an error, a warning, a file name that
may hold surrogate escapes): it is matched as bytes too, and every character
that a covered byte belongs to is masked, so no part of a secret survives.
"""

from __future__ import annotations

import codecs
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate

MASK = "***"
_MASK_BYTES = MASK.encode()

Secret = str | bytes

_SURROGATES = "soopervisor.surrogates"


def _encode_surrogates(error: UnicodeError) -> tuple[bytes, int]:
    """``surrogateescape`` for U+DC80..U+DCFF (os.fsdecode's escapes), ``surrogatepass`` for other lone surrogates.

    Any str becomes bytes this way, so a message holding a lone surrogate can
    never make redaction itself fail.
    """
    if not isinstance(error, UnicodeEncodeError):
        raise error
    out = bytearray()
    for ch in error.object[error.start : error.end]:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(code - 0xDC00)
        elif 0xD800 <= code <= 0xDFFF:
            out += ch.encode("utf-8", "surrogatepass")
        else:  # pragma: no cover - UTF-8 encodes every other code point
            raise error
    return bytes(out), error.end


codecs.register_error(_SURROGATES, _encode_surrogates)


def to_bytes(text: str) -> bytes:
    """``text`` as the bytes it stands for: UTF-8, surrogate escapes back to their bytes."""
    return text.encode("utf-8", _SURROGATES)


def _char_size(ch: str) -> int:
    """How many bytes :func:`to_bytes` makes of one character."""
    code = ord(ch)
    if code < 0x80:
        return 1
    if code < 0x800:
        return 2
    if 0xD800 <= code <= 0xDFFF:
        return 1 if code >= 0xDC80 else 3
    return 3 if code < 0x10000 else 4


def _patterns(secret: bytes) -> tuple[bytes, ...]:
    """What to look for: the bytes, and for bytes that are not UTF-8 also how a
    decoder that replaces them would show them (an error message may quote it so)."""
    try:
        secret.decode("utf-8")
    except UnicodeDecodeError:
        shown = secret.decode("utf-8", "replace").encode("utf-8")
        return (secret, shown) if shown != secret else (secret,)
    return (secret,)


class Redactor:
    """The set of secret values one run must never show."""

    def __init__(self, secrets: Iterable[Secret] = ()) -> None:
        # tuples replaced as a whole on add, so a stream reading them from
        # another thread always sees a consistent set
        self._secrets: tuple[Secret, ...] = ()
        self._keys: tuple[bytes, ...] = ()  # each secret's bytes, for de-duplication
        self._patterns: tuple[bytes, ...] = ()
        self._subscribers: tuple[Callable[[str], None], ...] = ()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: Secret) -> None:
        """Register a value (str or bytes); empty values are ignored (they would mask everything)."""
        if isinstance(secret, str):
            key = to_bytes(secret)
        elif isinstance(secret, (bytes, bytearray)):
            key = bytes(secret)
            secret = key
        else:
            # the message must not contain the value
            raise TypeError(f"a secret must be a str or bytes, not {type(secret).__name__}")
        if not key or key in self._keys:
            return
        self._secrets = self._secrets + (secret,)
        self._keys = self._keys + (key,)
        self._patterns = tuple(dict.fromkeys(self._patterns + _patterns(key)))
        for tell in self._subscribers:
            tell(_shown(key))

    def subscribe(self, tell: Callable[[str], None]) -> None:
        """Call ``tell(value)`` for every value registered, now and later.

        GitHub Actions uses it to send ``::add-mask::`` for a credential the
        moment it is known (a refreshed access token), before anything prints.
        ``value`` is text: bytes that are not UTF-8 come as U+FFFD, as a
        terminal shows them.
        """
        self._subscribers = self._subscribers + (tell,)
        for key in self._keys:
            tell(_shown(key))

    def unsubscribe(self, tell: Callable[[str], None]) -> None:
        self._subscribers = tuple(t for t in self._subscribers if t != tell)  # bound methods are equal, not identical

    @property
    def secrets(self) -> tuple[Secret, ...]:
        """The registered values, in order, as given; for checks, never for output."""
        return self._secrets

    def redact_bytes(self, data: bytes) -> bytes:
        """Mask bytes that are complete, e.g. a file name as the container wrote it."""
        patterns = self._patterns
        if not patterns or not data:
            return data
        occurrences = _occurrences(data, patterns)
        if not occurrences:
            return data
        out, _ = _mask(data, occurrences, -1, len(data), _MASK_BYTES)
        return b"".join(out)

    def redact_part(self, data: bytes, start: int, end: int) -> bytes:
        """``data[start:end]``, masked as it is masked within the whole of ``data``.

        For a name cut out of a line: a secret that begins before the name
        and ends inside it still masks the part inside.
        """
        patterns = self._patterns
        part = data[start:end]
        if not patterns or not part:
            return part
        clipped = [
            (max(s, start) - start, min(e, end) - start)
            for s, e in _occurrences(data, patterns)
            if s < end and e > start
        ]
        out, _ = _mask(part, clipped, -1, len(part), _MASK_BYTES)
        return b"".join(out)

    def redact(self, text: str) -> str:
        """Mask a text that is complete, e.g. an error message or a file name.

        The text is matched as the bytes it stands for (see :func:`to_bytes`);
        a character is masked when any of its bytes is part of a secret.
        """
        patterns = self._patterns
        if not patterns or not text:
            return text
        data = to_bytes(text)
        occurrences = _occurrences(data, patterns)
        if not occurrences:
            return text
        if len(data) != len(text):  # some characters are several bytes: map byte runs to characters
            starts = [0, *accumulate(_char_size(ch) for ch in text)]
            occurrences = [
                (bisect_right(starts, s) - 1, bisect_right(starts, e - 1)) for s, e in occurrences
            ]
        out, _ = _mask(text, occurrences, -1, len(text), MASK)
        return "".join(out)

    def stream(self) -> RedactingStream:
        """A new bytes stream; secrets added here later apply to what it is fed afterwards."""
        return RedactingStream(self)

    def __repr__(self) -> str:
        n = len(self._secrets)
        return f"<Redactor {n} secret{'s' if n != 1 else ''}>"


def _shown(key: bytes) -> str:
    return key.decode("utf-8", "replace")


class RedactingStream:
    """Masks bytes fed in chunks cut anywhere, one stream per output channel."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        # bytes not yet emitted: only what could still be part of a secret
        self._buf = b""
        # a run whose ``***`` was already emitted covers self._buf[:self._open];
        # an occurrence starting at or before this index joins that run.
        # -1: no such run (a run that ended before the buffer cannot be joined)
        self._open = -1

    def feed(self, chunk: bytes) -> bytes:
        """Return the bytes that are safe to emit now; keep back what may be a secret."""
        if not isinstance(chunk, (bytes, bytearray)):
            raise TypeError(f"a redacting stream takes bytes, not {type(chunk).__name__}")
        if not self._buf and self._open < 0 and not self._redactor._patterns:
            return bytes(chunk)
        self._buf += chunk
        return self._process(final=False)

    def flush(self) -> bytes:
        """End of stream: return the rest, masked, and start afresh."""
        out = self._process(final=True)
        self._buf, self._open = b"", -1
        return out

    def _process(self, final: bool) -> bytes:
        buf = self._buf
        patterns = self._redactor._patterns
        # a secret may start at `hold` or later, so nothing from there on is
        # final; everything before is
        hold = len(buf) if final else _hold_start(buf, patterns)
        occurrences = _occurrences(buf, patterns) if patterns else []
        out, end = _mask(buf, occurrences, self._open, hold, _MASK_BYTES)
        # a run reaching `hold` can be extended by an occurrence starting
        # there: its ``***`` is out already, remember it is still open
        self._open = end - hold if end >= hold else -1
        self._buf = buf[hold:]
        return b"".join(out)

    def __repr__(self) -> str:
        # the buffer may hold the beginning of a secret
        return f"<RedactingStream holding {len(self._buf)} bytes>"


def _occurrences(text: bytes, secrets: Sequence[bytes]) -> list[tuple[int, int]]:
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


def _mask(text, occurrences: list[tuple[int, int]], open_end: int, hold: int, mask) -> tuple[list, int]:
    """Masked text[:hold] as pieces (of text's type: str or bytes), and the end of the last run.

    ``open_end`` >= 0: text[:open_end] continues a run whose mask was already
    emitted. Occurrences starting at or after ``hold`` are left for later.
    """
    out: list = []
    end = open_end
    for start, stop in occurrences:
        if start >= hold:
            break
        if start <= end:  # overlaps or touches the current run
            end = max(end, stop)
            continue
        out.append(text[max(end, 0) : start])
        out.append(mask)
        end = stop
    if end < hold:
        out.append(text[max(end, 0) : hold])
    return out, end


def _hold_start(buf: bytes, secrets: Sequence[bytes]) -> int:
    """Earliest p such that buf[p:] is a proper prefix of a secret, else len(buf)."""
    n = len(buf)
    hold = n
    for secret in secrets:
        first = secret[:1]
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
