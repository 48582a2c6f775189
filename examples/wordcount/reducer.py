"""Word count reducer: sums the mappers' counts (one JSON object per line)
and prints the total as one JSON object with sorted keys."""
import collections
import json
import sys

total = collections.Counter()
for line in sys.stdin:
    line = line.strip()
    if line:
        total.update(json.loads(line))
json.dump(dict(sorted(total.items())), sys.stdout, separators=(",", ":"))
