"""Word count logic shared by mapper.py, reducer.py and the peer benchmarks
(bench/peers/peers.py), so that every system counts with the same code."""
import collections


def count(data: bytes) -> dict:
    """The words of a chunk of text (split at whitespace) and how often each occurs."""
    return collections.Counter(data.decode("utf-8", "replace").split())


def merge(counts) -> dict:
    """The sum of an iterable of counts, sorted by word."""
    total = collections.Counter()
    for c in counts:
        total.update(c)
    return dict(sorted(total.items()))
