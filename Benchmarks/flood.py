#!/usr/bin/env python3
"""Load against a running `topgun serve`: authenticated readers flooding repairs and
unauthenticated WebSocket clients sending maximal frames, all at once, while /healthz is
timed and the server's resident memory sampled.

    python3 Benchmarks/flood.py --pid PID --tcp 127.0.0.1:7001 --http 127.0.0.1:8080 \
        --secret-file secret --map m --seconds 60

Each reader completes the replica handshake (protocol 7: HELLO, WELCOME, PROOF,
ADMITTED) with the shared secret, then sends DIGESTS of all zeroes (each asks for the
whole map again) as fast as the server takes them, and reads nothing: the server's
repairs stall on a full socket. Each WebSocket client upgrades GET /sync and sends
64 KiB binary frames (the limit before authentication) until the server closes it, then
reconnects. Prints one JSON object: peak and final RSS, /healthz latency percentiles,
frames and bytes sent.
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import socket
import struct
import threading
import time

PROTOCOL = 7
HELLO, WELCOME, DIGESTS, ERROR, ADMITTED, PROOF = 1, 2, 6, 8, 14, 12
PARTITIONS, BUCKETS = 271, 16


def frame(kind, body):
    return struct.pack(">IB", 1 + len(body), kind) + body


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_frame(sock):
    while True:
        length, kind = struct.unpack(">IB", read_exact(sock, 5))
        body = read_exact(sock, length - 1)
        if kind != 11:  # heartbeat
            return kind, body


def digests(map_name):
    name = map_name.encode()
    body = struct.pack(">HH", 1, len(name)) + name + struct.pack(">H", PARTITIONS)
    zero = b"\0" * (8 * BUCKETS)
    for p in range(PARTITIONS):
        body += struct.pack(">H", p) + zero
    return frame(DIGESTS, body)


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.values = {}

    def add(self, key, n=1):
        with self.lock:
            self.values[key] = self.values.get(key, 0) + n


def reader(index, host, port, secret, payload, stop, counters):
    node = 0x5000_0000 + index
    while not stop.is_set():
        try:
            sock = socket.create_connection((host, port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            nonce = os.urandom(32)
            wall = int(time.time() * 1000)
            sock.sendall(frame(HELLO, struct.pack(">HQB", PROTOCOL, node, 0) + nonce + struct.pack(">Q", wall)))
            kind, body = read_frame(sock)
            if kind == WELCOME:
                server_nonce = body[2:34]
                message = b"topgun-client-proof-v7" + nonce + server_nonce + struct.pack(">Q", node)
                sock.sendall(frame(PROOF, hmac.new(secret, message, hashlib.sha256).digest()))
                kind, body = read_frame(sock)
            if kind != ADMITTED:
                counters.add("reader_refused")
                sock.close()
                time.sleep(1)
                continue
            counters.add("readers_admitted")
            sock.settimeout(1.0)
            while not stop.is_set():
                try:
                    sock.sendall(payload)
                    counters.add("digests_frames")
                    counters.add("digests_bytes", len(payload))
                except socket.timeout:
                    continue
            sock.close()
        except (OSError, ConnectionError):
            counters.add("reader_reconnects")
            time.sleep(0.2)


def ws_frame(payload):
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload[:64])) + payload[64:]
    # Only the head is masked properly; the rest is sent as is (it is noise either way).
    return struct.pack(">BBQ", 0x82, 0x80 | 127, len(payload)) + mask + masked


def ws_client(host, port, stop, counters):
    # A topgun frame header claiming the 64 KiB handshake limit, then noise.
    payload = struct.pack(">I", 64 << 10) + bytes([HELLO]) + os.urandom((64 << 10) - 5)
    message = ws_frame(payload)
    while not stop.is_set():
        try:
            sock = socket.create_connection((host, port))
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                (
                    f"GET /sync HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("closed")
                head += chunk
            if b" 101 " not in head.split(b"\r\n")[0]:
                counters.add("ws_refused")
                sock.close()
                continue
            counters.add("ws_upgraded")
            sock.settimeout(2.0)
            while not stop.is_set():
                sock.sendall(message)
                counters.add("ws_frames")
                counters.add("ws_bytes", len(message))
        except (OSError, ConnectionError):
            counters.add("ws_closed_by_server")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def health(host, port, stop, latencies, counters):
    while not stop.is_set():
        try:
            sock = socket.create_connection((host, port), timeout=10)
            while not stop.is_set():
                start = time.monotonic()
                sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                data = b""
                while b"ok\n" not in data:
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise ConnectionError("closed")
                    data += chunk
                latencies.append(time.monotonic() - start)
                time.sleep(0.05)
        except (OSError, ConnectionError):
            counters.add("healthz_errors")
            time.sleep(0.05)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--tcp", required=True)
    parser.add_argument("--http", required=True)
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--map", default="m")
    parser.add_argument("--readers", type=int, default=100)
    parser.add_argument("--websockets", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    tcp_host, tcp_port = args.tcp.rsplit(":", 1)
    http_host, http_port = args.http.rsplit(":", 1)
    secret = open(args.secret_file, "rb").read().strip()
    payload = digests(args.map)
    stop = threading.Event()
    counters = Counters()
    latencies = []
    threads = [threading.Thread(target=health, args=(http_host, int(http_port), stop, latencies, counters), daemon=True)]
    threads += [
        threading.Thread(target=reader, args=(i, tcp_host, int(tcp_port), secret, payload, stop, counters), daemon=True)
        for i in range(args.readers)
    ]
    threads += [
        threading.Thread(target=ws_client, args=(http_host, int(http_port), stop, counters), daemon=True)
        for _ in range(args.websockets)
    ]
    before = rss_kib(args.pid)
    for t in threads:
        t.start()
    peak = before
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        peak = max(peak, rss_kib(args.pid))
        time.sleep(0.2)
    final = rss_kib(args.pid)
    stop.set()
    ordered = sorted(latencies)

    def percentile(q):
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1) if ordered else None

    print(
        json.dumps(
            {
                "rss_before_mb": round(before / 1024, 1),
                "rss_peak_mb": round(peak / 1024, 1),
                "rss_final_mb": round(final / 1024, 1),
                "healthz_requests": len(ordered),
                "healthz_p50_ms": percentile(0.50),
                "healthz_p99_ms": percentile(0.99),
                "healthz_max_ms": percentile(1.0),
                **counters.values,
            }
        )
    )


if __name__ == "__main__":
    main()
