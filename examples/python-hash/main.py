"""A warm Stratus process function doing the benchmarks' CPU-bound task: its
input is a decimal integer i, its output the hex digest of hash_task(i)
(deploy with --warm)."""
import hashlib

from stratus_warm import serve

HASH_ROUNDS = 1000
PAD = b"x" * (1024 - 32)


# Copied from bench/peers/work.py (a function's bundle is only its own
# directory): the two must stay identical, or Stratus and the peers do
# different work.
def hash_task(i: int) -> str:
    h = hashlib.sha256(str(i).encode()).digest()
    for _ in range(HASH_ROUNDS):
        h = hashlib.sha256(h + PAD).digest()
    return h.hex()


def handler(data: bytes, invocation_id: str) -> bytes:
    return hash_task(int(data)).encode()


if __name__ == "__main__":
    serve(handler)
