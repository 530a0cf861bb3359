"""Stop strings over a stream of text deltas.

A stop string may straddle deltas ("Hel" + "lo"), so the matcher holds back the longest
tail of the pending text that could still grow into a stop string, and releases it once it
cannot. When a stop string matches, the text before it is released, the stop string and
everything after it are dropped, and `matched` is set. Nothing of a stop string ever
reaches the output.
"""
from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._max_hold = max((len(s) for s in self._stops), default=0) - 1
        self._pending = ""
        self.matched: str | None = None

    def feed(self, text: str) -> str:
        """Adds text; returns what is safe to emit. After a match, returns ""."""
        if self.matched is not None:
            return ""
        if not self._stops:
            return text
        buf = self._pending + text
        hit_at, hit = len(buf) + 1, None
        for stop in self._stops:
            at = buf.find(stop)
            if at != -1 and at < hit_at:
                hit_at, hit = at, stop
        if hit is not None:
            self.matched = hit
            self._pending = ""
            return buf[:hit_at]
        hold = self._hold_length(buf)
        self._pending = buf[len(buf) - hold:] if hold else ""
        return buf[: len(buf) - hold]

    def flush(self) -> str:
        """At end of stream the held-back tail can no longer become a stop string."""
        out, self._pending = ("" if self.matched is not None else self._pending), ""
        return out

    def _hold_length(self, buf: str) -> int:
        """Length of the longest suffix of `buf` that is a proper prefix of some stop."""
        for n in range(min(self._max_hold, len(buf)), 0, -1):
            tail = buf[-n:]
            if any(stop.startswith(tail) for stop in self._stops):
                return n
        return 0
