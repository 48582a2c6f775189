"""A warm Stratus process function: the interpreter starts once per worker
slot, then serves many invocations (deploy with --warm)."""
import hashlib
import json

from stratus_warm import serve


def handler(data: bytes, invocation_id: str) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    return json.dumps({"sha256": digest, "bytes": len(data)}).encode()


if __name__ == "__main__":
    serve(handler)
