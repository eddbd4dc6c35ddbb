"""Schedule strings: the choices of one run, short enough to paste into a bug report.

A schedule is the list of thread indices chosen at every decision point where more than one
thread was runnable. It is encoded as

    S1:<runs>.<check>

`<runs>` is a run-length encoding: one letter per thread index (a–z for 0–25, A–Z for 26–51),
followed by a decimal repeat count when the same thread was chosen more than once in a row.
`<check>` is a CRC-32 of the runs in base 36, so a truncated or edited string is refused
instead of silently replaying a different run.
"""

from __future__ import annotations

import string
import zlib

PREFIX = "S1:"
_ALPHABET = string.ascii_lowercase + string.ascii_uppercase
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
MAX_THREADS = len(_ALPHABET)
# More decisions than any run can make within Config.max_steps' range: a bound on decoding.
MAX_CHOICES = 10_000_000


class ScheduleError(ValueError):
    """A schedule string that cannot be decoded, or one that does not fit the program."""


def _check(body: str) -> str:
    n = zlib.crc32(body.encode("ascii"))
    digits = []
    for _ in range(7):
        n, r = divmod(n, 36)
        digits.append("0123456789abcdefghijklmnopqrstuvwxyz"[r])
    return "".join(reversed(digits)).lstrip("0") or "0"


def encode(choices: list[int] | tuple[int, ...]) -> str:
    parts: list[str] = []
    i, n = 0, len(choices)
    while i < n:
        c = choices[i]
        if not 0 <= c < MAX_THREADS:
            raise ScheduleError(f"thread index {c} cannot be encoded (at most {MAX_THREADS} threads)")
        j = i + 1
        while j < n and choices[j] == c:
            j += 1
        parts.append(_ALPHABET[c] if j - i == 1 else f"{_ALPHABET[c]}{j - i}")
        i = j
    body = "".join(parts)
    return f"{PREFIX}{body}.{_check(body)}"


def decode(text: str) -> list[int]:
    text = text.strip()
    if not text.isascii():
        raise ScheduleError("not a schedule string: it has characters outside ASCII")
    if not text.startswith("S") or ":" not in text:
        raise ScheduleError(f"not a schedule string: {text[:40]!r} (expected it to start with {PREFIX!r})")
    if not text.startswith(PREFIX):
        raise ScheduleError(f"schedule format {text.split(':', 1)[0]!r} is not supported (expected {PREFIX!r})")
    body, dot, check = text[len(PREFIX):].rpartition(".")
    if not dot:
        raise ScheduleError("schedule string has no checksum: it was truncated")
    if _check(body) != check:
        raise ScheduleError("schedule checksum does not match: the string was truncated or edited")
    choices: list[int] = []
    i, n = 0, len(body)
    while i < n:
        c = _INDEX.get(body[i])
        if c is None:
            raise ScheduleError(f"malformed schedule: unexpected {body[i]!r} at position {i}")
        j = i + 1
        while j < n and body[j].isdigit():
            j += 1
        count = int(body[i + 1:j]) if j > i + 1 else 1
        if len(choices) + count > MAX_CHOICES:
            raise ScheduleError(f"schedule has more than {MAX_CHOICES:,} choices: not a run of this tool")
        choices.extend([c] * count)
        i = j
    return choices


def thread_letter(index: int) -> str:
    return _ALPHABET[index] if 0 <= index < MAX_THREADS else f"#{index}"
