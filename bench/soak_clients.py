"""Hostile clients for bench/soak.sh, standard library only.

Each mode loops until its deadline, on 127.0.0.1 only, and prints one JSON line of
counts when done:
  slow      reads 50 KB of a large response at ~20 KB/s, then hangs up
  abort     starts a streaming request, reads its first bytes, then hangs up
  oversize  declares a 40 MB body (nexus must answer 413 without reading it)
  dying     streams from an upstream that dies mid-stream (nexus must end the
            stream with an error event)
"""

import json
import socket
import sys
import threading
import time

HOST = "127.0.0.1"


def request(path, body=b"{}", extra=""):
    return (
        f"POST {path} HTTP/1.1\r\nHost: soak.example.com\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def connect(port):
    s = socket.create_connection((HOST, port), timeout=10)
    s.settimeout(10)
    return s


def slow(port):
    s = connect(port)
    s.sendall(request("/v1/messages?json_size=60000"))
    got = 0
    while got < 50_000:
        chunk = s.recv(2048)
        if not chunk:
            break
        got += len(chunk)
        time.sleep(0.1)
    s.close()
    return "ok"


def abort(port):
    s = connect(port)
    s.sendall(request("/v1/messages?events=200&size=200&delay_ms=20", b'{"stream":true}'))
    s.recv(512)
    # Hang up hard (RST) mid-stream.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    return "ok"


def oversize(port):
    s = connect(port)
    s.sendall(
        b"POST /v1/messages HTTP/1.1\r\nHost: soak.example.com\r\nContent-Length: 40000000\r\n\r\n"
    )
    answer = s.recv(4096)
    s.close()
    return "ok" if answer.startswith(b"HTTP/1.1 413") else "unexpected"


def dying(port):
    s = connect(port)
    s.sendall(request("/v1/messages?events=20&size=100&die_after=5", b'{"stream":true}'))
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return "ok" if b"upstream connection lost" in data else "unexpected"


def main():
    mode, port, seconds, parallel = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    action = {"slow": slow, "abort": abort, "oversize": oversize, "dying": dying}[mode]
    deadline = time.time() + seconds
    counts = {}
    lock = threading.Lock()

    def loop():
        while time.time() < deadline:
            try:
                outcome = action(port)
            except OSError as e:
                outcome = type(e).__name__
            with lock:
                counts[outcome] = counts.get(outcome, 0) + 1

    threads = [threading.Thread(target=loop) for _ in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"mode": mode, **counts}))


if __name__ == "__main__":
    main()
