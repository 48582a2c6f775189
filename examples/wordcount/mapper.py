"""Word count mapper: counts the words of its input (a chunk of text) and
prints the counts as one JSON object."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wc  # noqa: E402

json.dump(wc.count(sys.stdin.buffer.read()), sys.stdout, separators=(",", ":"))
