"""Runs one task of a `stratus.lithops` executor inside a Stratus process
function: reads `{"func", "func_key", "args"}` on stdin, runs the pickled
function on the pickled arguments, and writes `{"result"}` or `{"error",
"traceback", "exception"}` as JSON on stdout (pickles in base64). Only the
standard library and the cloudpickle shipped beside it in `vendor/`."""

import base64
import json
import os
import sys
import traceback
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor"))

import cloudpickle  # noqa: E402


def fetch(key):
    """An object of the project, through the Stratus API (the attempt's own URL and token)."""
    req = urllib.request.Request(
        os.environ["STRATUS_URL"].rstrip("/") + "/v1/objects/" + key,
        headers={"authorization": "Bearer " + os.environ.get("STRATUS_TOKEN", "")},
    )
    with urllib.request.urlopen(req) as res:
        return res.read()


def main():
    task = json.loads(sys.stdin.buffer.read())
    here = "%d.%d" % sys.version_info[:2]
    if task.get("python") and task["python"] != here:
        # Pickled code runs only on the Python it was pickled by.
        sys.stdout.write(json.dumps({"error": "the function was pickled by Python %s, and the server runs it with "
                                              "Python %s: use the same minor version" % (task["python"], here)}))
        return
    os.environ.update(task.get("env") or {})
    func_bytes = base64.b64decode(task["func"]) if task.get("func") else fetch(task["func_key"])
    out = {}
    try:
        func = cloudpickle.loads(func_bytes)
        args, kwargs = cloudpickle.loads(base64.b64decode(task["args"]))
        out["result"] = base64.b64encode(cloudpickle.dumps(func(*args, **kwargs))).decode()
    except BaseException as e:  # the caller re-raises it
        out["error"] = repr(e)
        out["traceback"] = traceback.format_exc()
        try:
            out["exception"] = base64.b64encode(cloudpickle.dumps(e)).decode()
        except Exception:
            pass
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()
