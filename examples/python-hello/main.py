"""A Stratus process function: counts the words of its input and returns JSON."""
import json
import os
import sys

text = sys.stdin.read()
words = text.split()
print(f"counting {len(words)} words for {os.environ.get('STRATUS_INVOCATION_ID')}", file=sys.stderr)
json.dump({"words": len(words), "chars": len(text)}, sys.stdout)
