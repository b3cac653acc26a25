"""serve_util.py - shared by the parity scripts that talk to `safetune serve` on loopback.

Serve(exe, args) starts `EXE serve ARGS --port 0` (a context manager: SIGTERM on exit, then
.returncode), reads the port from its first stdout line ("... 127.0.0.1:PORT ..."), and
post(path, body) sends JSON and returns (HTTP status, decoded JSON body), HTTP errors included."""
import json
import subprocess
import urllib.error
import urllib.request


class Serve:
    def __init__(self, exe, args, timeout=10):
        self.timeout = timeout
        self.proc = subprocess.Popen([exe, "serve", *args, "--port", "0"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if "127.0.0.1:" not in line:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError("server did not start: %r %s" % (line, err))
        self.port = int(line.split("127.0.0.1:")[1].split()[0])
        self.base = "http://127.0.0.1:%d" % self.port
        self.returncode = None

    def post(self, path, body):
        rq = urllib.request.Request(self.base + path, data=json.dumps(body).encode(),
                                    headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(rq, timeout=self.timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.returncode = self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False
