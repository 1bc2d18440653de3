"""Run latencies kept two ways: the exact durations (small windows) or a log-scale histogram
(windows read from the stats rollups), merged across windows and pipelines the same way.

The histogram has `BINS_PER_DECADE` = 20 bins a decade from 1 ms (`FLOOR_SECONDS`) to 10^7 s
(about 115 days): bin `k` (1..200) holds durations in `[1 ms · 10^((k-1)/20), 1 ms · 10^(k/20))`,
bin 0 everything under 1 ms (0 included: an `invalid_input` run finishes as it is created) and
bin 201 everything from 10^7 s. A percentile is read the way `percentile_cont` reads sorted
values, with each value replaced by its bin's geometric midpoint (0 for bin 0, the lower edge
for bin 201). Every value from 1 ms is then within a factor 10^(1/40) ≈ 1.0593 of itself and
every value under it within 1 ms, so an interpolation between two of them is off by at most
5.93 % of the exact value plus 1 ms: **a percentile from the histogram is within ±(5.93 % + 1 ms)
of the exact one** (above 115 days: "at least 115 days").

Stored (`pack`), a histogram is one integer with `BIN_BITS` bits per bin, bin `k` at bit
`BIN_BITS * k`, written as `"LOW:HEX"` (the lowest bin, and the integer shifted down to it in
hex). Adding two histograms is then adding two integers, which Python does in C: a week of
hourly rows for 50 pipelines (~50,000 bins) merges in a few milliseconds instead of ~50 ms of
dict updates. 40 bits a bin hold counts up to 10^12.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

FLOOR_SECONDS = 0.001
BINS_PER_DECADE = 20
DECADES = 10
TOP_BIN = BINS_PER_DECADE * DECADES + 1  # durations from 10^7 s
RELATIVE_ERROR = 10 ** (1 / (2 * BINS_PER_DECADE)) - 1  # ≈ 0.0593
ABSOLUTE_ERROR_SECONDS = FLOOR_SECONDS
BIN_BITS = 40
_BIN_MASK = (1 << BIN_BITS) - 1


def bin_of(seconds: float) -> int:
    """The histogram bin a duration falls in (negative durations count as 0)."""
    if seconds < FLOOR_SECONDS:
        return 0
    k = math.floor(math.log10(seconds / FLOOR_SECONDS) * BINS_PER_DECADE) + 1
    return min(max(k, 1), TOP_BIN)


def bin_value(k: int) -> float:
    """The duration that stands for every duration in bin `k`."""
    if k <= 0:
        return 0.0
    if k >= TOP_BIN:
        return float(FLOOR_SECONDS * 10**DECADES)
    return FLOOR_SECONDS * 10 ** ((k - 0.5) / BINS_PER_DECADE)


def histogram(durations: Iterable[float]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for seconds in durations:
        k = bin_of(seconds)
        counts[k] = counts.get(k, 0) + 1
    return counts


def pack(counts: Mapping[int, int]) -> str:
    """The stored form of a histogram (see the module docstring); "" when empty."""
    found = {k: n for k, n in counts.items() if n}
    if not found:
        return ""
    low = min(found)
    value = 0
    for k, n in found.items():
        if not 0 <= n <= _BIN_MASK:
            raise ValueError(f"bin {k} holds {n}, more than {BIN_BITS} bits")
        value += n << (BIN_BITS * (k - low))
    return f"{low}:{value:x}"


def packed_sum(packed: Iterable[str | None]) -> int:
    """Stored histograms added up, as one integer (`unpack` it)."""
    total = 0
    for text in packed:
        if text:
            low, _, digits = text.partition(":")
            total += int(digits, 16) << (BIN_BITS * int(low))
    return total


def unpack(value: int) -> dict[int, int]:
    """The bins of a packed histogram (or of a sum of them), the empty ones left out."""
    width = BIN_BITS // 8
    raw = value.to_bytes(-(-value.bit_length() // 8), "little")
    counts: dict[int, int] = {}
    for k in range(-(-len(raw) // width)):
        n = int.from_bytes(raw[k * width : (k + 1) * width], "little")
        if n:
            counts[k] = n
    return counts


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """`percentile_cont`: linear interpolation between the two closest ranks (None if empty)."""
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def histogram_percentile(counts: Mapping[int, int], fraction: float) -> float | None:
    """`percentile` over the histogram's values (each duration replaced by its bin's value)."""
    total = sum(counts.values())
    if total == 0:
        return None
    position = fraction * (total - 1)
    low = math.floor(position)
    low_value = high_value = None
    seen = 0
    for k in sorted(counts):
        seen += counts[k]
        if low_value is None and low < seen:
            low_value = bin_value(k)
        if low + 1 < seen or seen == total:
            high_value = bin_value(k)
            break
    assert low_value is not None and high_value is not None
    return low_value + (high_value - low_value) * (position - low)


@dataclass
class Latencies:
    """The latencies of a set of runs: always the histogram (packed: merging adds integers),
    and the exact durations as long as every part merged in had them (`exact is None` once a
    part came from the rollups)."""

    packed: int = 0
    exact: list[float] | None = field(default_factory=list)
    _bins: dict[int, int] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, durations: Iterable[float]) -> Latencies:
        values = [max(0.0, d) for d in durations]
        return cls(packed_sum([pack(histogram(values))]), values)

    @classmethod
    def rolled(cls, packed: int) -> Latencies:
        return cls(packed, None)

    def add(self, other: Latencies) -> None:
        self.packed += other.packed
        self._bins = None
        if self.exact is None or other.exact is None:
            self.exact = None
        else:
            self.exact.extend(other.exact)

    def bins(self) -> dict[int, int]:
        if self._bins is None:
            self._bins = unpack(self.packed)
        return self._bins

    @property
    def total(self) -> int:
        return sum(self.bins().values())

    def percentile(self, fraction: float) -> float | None:
        if self.exact is not None:
            return percentile(sorted(self.exact), fraction)
        return histogram_percentile(self.bins(), fraction)


def merged(parts: Iterable[Latencies]) -> Latencies:
    result = Latencies()
    for part in parts:
        result.add(part)
    return result
