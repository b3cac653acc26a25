#!/usr/bin/env python3
"""`safetune serve` on loopback under load: a bounded set of concurrent clients (threads, seeded)
for a fixed time, mixing
  - completions: POST /v1/chat/completions and /v1/completions with the real model, GET /v1/models;
  - bad requests that reach the server's handler: invalid JSON, wrong types and ranges, unknown
    parameters, stream = true, unknown paths, wrong methods, a body over the limit (sent whole, or
    only declared by Content-Length) - each must get a 4xx whose body is a JSON error object
    {"error": {"message", "type", ...}};
  - bad HTTP that libmicrohttpd refuses before the handler (no colon in a header, a 100 KB header,
    a 100 KB URL, a non-numeric Content-Length, broken chunked encoding, a request line that is
    not HTTP): a 4xx status (its own short HTML body) or the connection closed, never a hang;
  - slow clients (slowloris): request headers or a body dripped a few bytes at a time, then
    abandoned;
  - clients that disconnect mid-answer: a completion request sent, the socket closed before or
    while the answer comes (also with "stream": true, which the server refuses);
while a monitor samples the server's RSS (/proc/PID/status VmRSS) and a prober checks that
GET /v1/models keeps answering. Passes when: the server never crashes (alive at the end, exit 0 on
SIGTERM), every good request got 200 with a well-formed answer, every bad request got what is said
above, the prober never failed, and memory stayed bounded: peak RSS at most the RSS after warm-up
+ 256 MiB, and the last third of the run no more than 32 MiB above the middle third (no growth).
Prints requests served, errors by kind, peak RSS, crashes.

usage: check_serve_load.py SAFETUNE_EXE MODEL [--seconds S] [--clients N] [--seed K] [--json OUT] [--fixed-clients]"""
import argparse
import atexit
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("exe")
ap.add_argument("model")
ap.add_argument("--seconds", type=float, default=60)
ap.add_argument("--clients", type=int, default=12)
ap.add_argument("--seed", type=int, default=16)
ap.add_argument("--json", default=None, help="write the counts here")
ap.add_argument("--fixed-clients", action="store_true", help="keep --clients even when completions are slow")
a = ap.parse_args()
if not os.path.exists(a.model):
    print("SKIP: model missing:", a.model)
    sys.exit(77)

MAX_BODY = 8 << 20
srv = subprocess.Popen([a.exe, "serve", "--model", a.model, "--port", "0", "--max-tokens", "8"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
atexit.register(lambda: srv.poll() is None and srv.kill())  # never leave the server behind
line = srv.stdout.readline()
if "127.0.0.1:" not in line:
    print("FAIL: server did not start:", line, srv.stderr.read() if srv.poll() is not None else "")
    sys.exit(1)
PORT = int(line.split("127.0.0.1:")[1].split()[0])

lock = threading.Lock()
counts = {}          # kind -> number
failures = []        # (kind, what)
stop_at = [0.0]


def note(kind, ok=True, what=""):
    with lock:
        counts[kind] = counts.get(kind, 0) + 1
        if not ok and len(failures) < 50:
            failures.append((kind, what))


def rss_kib():
    try:
        with open("/proc/%d/status" % srv.pid) as f:
            for l in f:
                if l.startswith("VmRSS:"):
                    return int(l.split()[1])
    except OSError:
        return -1
    return -1


PATIENCE = [60.0]  # seconds a client waits for an answer (set after the warm-up)


def request(method, path, body=None, headers=None, timeout=None):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout or PATIENCE[0])
    try:
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def json_error(status, data):
    """4xx with {"error": {"message": str, "type": str}}."""
    if not 400 <= status < 500:
        return False
    try:
        e = json.loads(data)["error"]
        return isinstance(e["message"], str) and isinstance(e["type"], str)
    except Exception:
        return False


def msgs(rng):
    words = ["hello", "tell", "me", "a", "story", "about", "cats", "numbers", "why", "sky", "blue", "ünïcödé", "\u2603"]
    return [{"role": "user", "content": " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))}]


# ---- good requests ----
def good_chat(rng):
    b = {"messages": msgs(rng), "max_tokens": rng.randint(1, 8), "temperature": rng.choice([0, 0.7]), "seed": rng.randint(0, 99)}
    st, d = request("POST", "/v1/chat/completions", json.dumps(b))
    try:
        ok = st == 200 and isinstance(json.loads(d)["choices"][0]["message"]["content"], str)
    except Exception:
        ok = False
    note("200 chat completion", ok, "%d %r" % (st, d[:200]))


def good_completion(rng):
    b = {"prompt": "Once upon a time", "max_tokens": rng.randint(1, 6), "temperature": 0}
    st, d = request("POST", "/v1/completions", json.dumps(b))
    try:
        ok = st == 200 and isinstance(json.loads(d)["choices"][0]["text"], str)
    except Exception:
        ok = False
    note("200 completion", ok, "%d %r" % (st, d[:200]))


def good_models(rng):
    st, d = request("GET", "/v1/models")
    note("200 models", st == 200 and b'"data"' in d, "%d %r" % (st, d[:200]))


# ---- bad requests the handler sees: 4xx + JSON error ----
BAD_BODIES = [
    ("invalid JSON", b'{"messages": [', "/v1/chat/completions"),
    ("empty body", b"", "/v1/chat/completions"),
    ("not an object", b"[1, 2]", "/v1/chat/completions"),
    ("messages not a list", b'{"messages": 5}', "/v1/chat/completions"),
    ("bad role", b'{"messages": [{"role": "wizard", "content": "x"}]}', "/v1/chat/completions"),
    ("max_tokens string", b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "x"}', "/v1/chat/completions"),
    ("max_tokens 1e39", b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1e39}', "/v1/chat/completions"),
    ("temperature 9", b'{"messages": [{"role": "user", "content": "x"}], "temperature": 9}', "/v1/chat/completions"),
    ("unknown parameter", b'{"messages": [{"role": "user", "content": "x"}], "frequency_penalty": 1.5}', "/v1/chat/completions"),
    ("stream true", b'{"messages": [{"role": "user", "content": "x"}], "stream": true}', "/v1/chat/completions"),
    ("n = 3", b'{"messages": [{"role": "user", "content": "x"}], "n": 3}', "/v1/chat/completions"),
    ("prompt token ids", b'{"prompt": [1, 2, 3]}', "/v1/completions"),
    ("deep nesting", b"[" * 100000, "/v1/chat/completions"),
]


def bad_body(rng):
    name, body, path = rng.choice(BAD_BODIES)
    st, d = request("POST", path, body)
    note("4xx " + name, json_error(st, d), "%d %r" % (st, d[:200]))


def bad_path(rng):
    st, d = request(rng.choice(["GET", "POST", "DELETE"]), "/v1/nothing/" + "x" * rng.randint(0, 300))
    note("404 unknown path", st == 404 and json_error(st, d), "%d %r" % (st, d[:200]))


def bad_method(rng):
    st, d = request(rng.choice(["GET", "PUT", "DELETE"]), "/v1/chat/completions")
    note("405 wrong method", st == 405 and json_error(st, d), "%d %r" % (st, d[:200]))


def oversized_sent(rng):
    body = b'{"messages": [{"role": "user", "content": "' + b"a" * (MAX_BODY + 1024) + b'"}]}'
    try:
        st, d = request("POST", "/v1/chat/completions", body)
        note("413 oversized body (sent)", st == 413 and json_error(st, d), "%d %r" % (st, d[:200]))
    except (ConnectionError, BrokenPipeError, socket.timeout) as e:
        # the server may answer 413 and close while the body is still being sent
        note("413 oversized body (sent)", True, repr(e))


def oversized_declared(rng):
    s = socket.create_connection(("127.0.0.1", PORT), timeout=PATIENCE[0])
    try:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000000000\r\n\r\n{\"messages\"")
        st, d = read_response(s)
        note("413 oversized body (declared)", st == 413 and json_error(st, d), "%s %r" % (st, d[:200]))
    finally:
        s.close()


def read_response(s):
    """(status, body) of one HTTP/1.1 answer on socket s (Content-Length bodies); (None, b'') when closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        b = s.recv(65536)
        if not b:
            return None, data
        data += b
    head, rest = data.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ")[1])
    n = 0
    for l in head.split(b"\r\n")[1:]:
        k, _, v = l.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v.strip())
    while len(rest) < n:
        b = s.recv(65536)
        if not b:
            break
        rest += b
    return status, rest[:n]


# ---- bad HTTP refused by libmicrohttpd before the handler: 4xx or closed ----
BAD_HTTP = [
    ("header without colon", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBadHeader\r\n\r\n"),
    ("100 KB header", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n"),
    ("100 KB URL", b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("non-numeric Content-Length", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"),
    ("broken chunked body", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
    ("not HTTP", b"GARBAGE\r\n\r\n"),
    ("binary junk", bytes(range(256)) * 4 + b"\r\n\r\n"),
]


def bad_http(rng):
    name, data = rng.choice(BAD_HTTP)
    s = socket.create_connection(("127.0.0.1", PORT), timeout=PATIENCE[0])
    try:
        s.sendall(data)
        try:
            st, d = read_response(s)
        except (ConnectionError, socket.timeout) as e:
            st, d = None, repr(e).encode()
        ok = st is None or 400 <= st < 500
        note("http-level: " + name + (" (closed)" if st is None else " (%d)" % st), ok, "%s %r" % (st, d[:200]))
    finally:
        s.close()


# ---- slow clients and disconnects ----
def slow_headers(rng):
    s = socket.create_connection(("127.0.0.1", PORT), timeout=PATIENCE[0])
    try:
        req = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        for i in range(0, len(req), 3):
            if time.time() > stop_at[0]:
                break
            s.sendall(req[i:i + 3])
            time.sleep(0.2)
        note("slow headers, abandoned")
    except (ConnectionError, socket.timeout):
        note("slow headers, abandoned")
    finally:
        s.close()


def slow_body(rng):
    s = socket.create_connection(("127.0.0.1", PORT), timeout=PATIENCE[0])
    try:
        body = json.dumps({"messages": msgs(rng), "max_tokens": 2}).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        finish = rng.random() < 0.5
        for i in range(0, len(body) - (0 if finish else 5), 4):
            s.sendall(body[i:i + 4])
            time.sleep(0.1)
        if finish:  # the whole body, slowly: a normal answer
            st, d = read_response(s)
            note("slow body, completed (200)", st == 200, "%s %r" % (st, d[:200]))
        else:
            note("slow body, abandoned")
    except (ConnectionError, socket.timeout) as e:
        note("slow body, abandoned", True, repr(e))
    finally:
        s.close()


def disconnect(rng):
    stream = rng.random() < 0.3
    body = json.dumps({"messages": msgs(rng), "max_tokens": 8, "stream": stream}).encode()
    s = socket.create_connection(("127.0.0.1", PORT), timeout=PATIENCE[0])
    try:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        if rng.random() < 0.5:
            s.recv(rng.randint(1, 20))  # part of the answer, then gone
        note("disconnect mid-answer" + (" (stream)" if stream else ""))
    except (ConnectionError, socket.timeout):
        note("disconnect mid-answer" + (" (stream)" if stream else ""))
    finally:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
        s.close()


SCENARIOS = [(good_chat, 20), (good_completion, 8), (good_models, 6), (bad_body, 20), (bad_path, 4), (bad_method, 4),
             (oversized_sent, 1), (oversized_declared, 2), (bad_http, 10), (slow_headers, 3), (slow_body, 3),
             (disconnect, 8)]
WEIGHTS = [w for _, w in SCENARIOS]


def client(k):
    rng = random.Random(a.seed * 1000 + k)
    while time.time() < stop_at[0]:
        f = rng.choices([f for f, _ in SCENARIOS], WEIGHTS)[0]
        try:
            f(rng)
        except Exception as e:  # a good request that could not be made at all is a failure
            note("client error in " + f.__name__, False, repr(e))


rss = []


def monitor():
    while time.time() < stop_at[0] + 1:
        rss.append((time.time(), rss_kib()))
        time.sleep(0.25)


probe_fail = [0, 0]


def prober():
    while time.time() < stop_at[0]:
        try:
            st, _ = request("GET", "/v1/models", timeout=60)
            probe_fail[1] += 1
            if st != 200:
                probe_fail[0] += 1
        except Exception:
            probe_fail[0] += 1
            probe_fail[1] += 1
        time.sleep(0.5)


# warm-up: a few completions load the caches, then the baseline RSS; a completion's time sets the
# clients' patience (completions are served one at a time: a client may wait for all the others,
# and a sanitizer build or a loaded machine is many times slower)
tw = time.time()
for i in range(3):
    request("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}),
            timeout=900)
per = (time.time() - tw) / 3
if per > 0.5 and not a.fixed_clients:  # a slow build (sanitizers) or machine: fewer clients, so that the run ends in time
    a.clients = min(a.clients, max(4, int(6 / per)))
PATIENCE[0] = max(60.0, 4 * per * (a.clients + 2))
print("warm-up: %.2f s per completion; %d clients, request timeout %.0f s" % (per, a.clients, PATIENCE[0]), flush=True)
base = rss_kib()
t0 = time.time()
stop_at[0] = t0 + a.seconds
threads = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
threads += [threading.Thread(target=monitor), threading.Thread(target=prober)]
for t in threads:
    t.start()
for t in threads:
    t.join()
alive = srv.poll() is None
srv.terminate()
try:
    rc = srv.wait(timeout=60)
except subprocess.TimeoutExpired:
    srv.kill()
    rc = srv.wait()
err = srv.stderr.read()

vals = [v for _, v in rss if v > 0]
peak = max(vals) if vals else -1
n = len(vals)
mid = max(vals[n // 3: 2 * n // 3] or [0])
last = max(vals[2 * n // 3:] or [0])
good = sum(v for k, v in counts.items() if k.startswith("200"))
total = sum(counts.values())
print("served %d requests in %.0f s with %d clients (%d good answers); server: %s, exit %s" %
      (total, time.time() - t0, a.clients, good, "alive" if alive else "DEAD", rc))
for k in sorted(counts):
    print("  %6d  %s" % (counts[k], k))
print("RSS: %.1f MiB after warm-up, peak %.1f MiB, middle third max %.1f, last third max %.1f MiB" %
      (base / 1024, peak / 1024, mid / 1024, last / 1024))
print("prober: %d of %d GET /v1/models failed" % (probe_fail[0], probe_fail[1]))
crashes = 0 if alive and rc == 0 else 1
print("crashes: %d" % crashes)
if a.json:
    with open(a.json, "w") as f:
        json.dump({"seconds": a.seconds, "clients": a.clients, "requests": total, "good": good, "counts": counts,
                   "rss_base_kib": base, "rss_peak_kib": peak, "crashes": crashes, "failures": failures[:20]}, f, indent=1)
bad = []
if failures:
    bad.append("%d wrong answers, first: %s" % (len(failures), failures[:5]))
if crashes:
    bad.append("server crashed or did not exit cleanly (alive=%s, exit %s): %s" % (alive, rc, err[-2000:]))
if probe_fail[0]:
    bad.append("the prober failed %d times" % probe_fail[0])
if peak > base + 256 * 1024:
    bad.append("peak RSS %.0f MiB > warm-up RSS %.0f + 256 MiB" % (peak / 1024, base / 1024))
if last > mid + 32 * 1024:
    bad.append("RSS grew in the last third: %.0f MiB > %.0f + 32" % (last / 1024, mid / 1024))
for k in ("200 chat completion", "200 completion", "disconnect mid-answer", "slow headers, abandoned"):
    if not counts.get(k):
        bad.append("no '%s' happened (run longer)" % k)
if bad:
    print("FAIL: " + "; ".join(bad))
    sys.exit(1)
print("PASS")
