"""A hostile process function for the sandbox tests: the input names one
escape to try (`NAME ARG...`); it prints `escaped` when the escape worked
and `blocked: REASON` when it did not. It never prints what it read."""
import ctypes, fcntl, os, socket, subprocess, sys, time

libc = ctypes.CDLL(None, use_errno=True)


def errno_text():
    e = ctypes.get_errno()
    return os.strerror(e)


def probe(name, args):
    if name == "environ":
        # The server's environment holds a canary value.
        pid, canary = args
        with open("/proc/%s/environ" % pid, "rb") as f:
            return canary.encode() in f.read()
    if name == "read":
        path, canary = args
        with open(path, "rb") as f:
            return canary.encode() in f.read()
    if name == "write":
        with open(os.path.join(args[0], "written-by-a-function"), "w") as f:
            f.write("x")
        return True
    if name == "connect":
        host, port = (args[0], args[1]) if len(args) == 2 else ("127.0.0.1", args[0])
        s = socket.create_connection((host, int(port)), timeout=5)
        s.close()
        return True
    if name == "setsid":
        # A grandchild in a session of its own holds a lock on LOCK until it
        # is killed; the test looks at the lock after the call ended.
        lock = args[0]
        code = "import fcntl,os,time\nf=open(%r,'w')\nfcntl.flock(f,fcntl.LOCK_EX)\nopen(%r,'w').close()\ntime.sleep(120)\n" % (lock, lock + ".held")
        subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(500):
            if os.path.exists(lock + ".held"):
                return True
            time.sleep(0.01)
        return False
    if name == "memory":
        # 8 children of 100 MiB each, all alive at once.
        code = "import time\nb=bytearray(100<<20)\nfor i in range(0,len(b),4096): b[i]=1\nprint('ok',flush=True)\ntime.sleep(3)\n"
        kids = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) for _ in range(8)]
        ok = [k.stdout.readline().strip() == b"ok" for k in kids]
        for k in kids:
            k.kill()
            k.wait()
        return all(ok)
    if name == "procs":
        pids = []
        try:
            for _ in range(500):
                pid = os.fork()
                if pid == 0:
                    time.sleep(5)
                    os._exit(0)
                pids.append(pid)
            return True
        finally:
            for p in pids:
                os.kill(p, 9)
                os.waitpid(p, 0)
    if name == "mount":
        target = args[0]
        os.makedirs(target, exist_ok=True)
        if libc.mount(b"none", target.encode(), b"tmpfs", 0, None) != 0:
            raise OSError(errno_text())
        libc.umount2(target.encode(), 2)
        return True
    if name == "ptrace":
        child = subprocess.Popen(["sleep", "30"])
        try:
            PTRACE_ATTACH, PTRACE_DETACH = 16, 17
            if libc.ptrace(PTRACE_ATTACH, child.pid, None, None) != 0:
                raise OSError(errno_text())
            os.waitpid(child.pid, 0)
            libc.ptrace(PTRACE_DETACH, child.pid, None, None)
            return True
        finally:
            child.kill()
            child.wait()
    raise ValueError("unknown probe " + name)


def main():
    words = sys.stdin.read().split()
    try:
        escaped = probe(words[0], words[1:])
        print("escaped" if escaped else "blocked: the probe found nothing")
    except Exception as e:  # the reason only, never data
        print("blocked: %s" % type(e).__name__)


main()
