"""Task bodies shared by every peer system in peers.py."""
import hashlib

HASH_ROUNDS = 1000
PAD = b"x" * (1024 - 32)


def noop(x):
    """Returns its input."""
    return x


def hash_task(i: int) -> str:
    """A CPU-bound task: 1,000 chained SHA-256 rounds over 1 KiB blocks,
    seeded by i. Must stay identical to examples/python-hash/main.py."""
    h = hashlib.sha256(str(i).encode()).digest()
    for _ in range(HASH_ROUNDS):
        h = hashlib.sha256(h + PAD).digest()
    return h.hex()
