"""Word count reducer: sums the mappers' counts (one JSON object per line)
and prints the total as one JSON object with sorted keys."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wc  # noqa: E402

counts = (json.loads(line) for line in sys.stdin if line.strip())
json.dump(wc.merge(counts), sys.stdout, separators=(",", ":"))
