"""Serve a Stratus warm process function (the STRATUS/1 framing).

Stratus starts the command once per worker slot and sends one request at a
time on stdin:

    STRATUS/1 <invocation-id> <n>\\n<n bytes of input>

and reads one answer on stdout:

    STRATUS/1 ok <n>\\n<n bytes of output>      (success)
    STRATUS/1 error <n>\\n<n bytes of message>  (failure)

Anything written to stderr is logged for the invocation in progress. Copy this
file next to your code and call `serve(handler)`; `handler(input: bytes,
invocation_id: str) -> bytes` may raise to fail the invocation.
"""
import sys
import traceback

PROTOCOL = b"STRATUS/1"


def serve(handler):
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        line = inp.readline()
        if not line:
            return
        proto, inv_id, n = line.split()
        if proto != PROTOCOL:
            raise SystemExit(f"unexpected framing: {line!r}")
        data = inp.read(int(n))
        try:
            result = handler(data, inv_id.decode())
            if isinstance(result, str):
                result = result.encode()
            status = b"ok"
        except Exception:  # the invocation fails; the process serves the next one
            result = traceback.format_exc().encode()
            sys.stderr.write(result.decode())
            status = b"error"
        sys.stderr.flush()
        out.write(b"%s %s %d\n" % (PROTOCOL, status, len(result)))
        out.write(result)
        out.flush()
