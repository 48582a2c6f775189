"""Word count mapper: counts the words of its input (a chunk of text) and
prints the counts as one JSON object."""
import collections
import json
import sys

counts = collections.Counter(sys.stdin.buffer.read().decode("utf-8", "replace").split())
json.dump(counts, sys.stdout, separators=(",", ":"))
