#!/usr/bin/env python3
"""Tiny HTTP endpoints for the mirrorfleet demo and system tests (standard library only).

  serve     an HTTP/1.1 server (keep-alive, Content-Length and chunked bodies) that answers
            200 to everything, prints one line per request and appends it as JSON to
            --record. Run as the demo's web server (ground truth of what the client sent) and
            as the analyzer the rebuilder forwards to (what came out of the mirror).
  udp-sink  counts VXLAN datagrams per VNI (a stand-in receiver for checking the kernel mirror)
  compare   matches the analyzer's records against the web server's: every request exactly
            once, same method, target, end-to-end headers in order, body, and the client's IP
            in X-Forwarded-For. Exit 1 on any difference.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# RFC 9110 7.6.1 hop-by-hop fields plus the framing ones the rebuilder re-writes (a chunked
# body is forwarded with Content-Length) and the one it appends to.
NOT_END_TO_END = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
    "x-forwarded-for",
}


def split_hostport(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


class Recorder:
    def __init__(self, path: str | None, label: str, quiet: bool):
        self.lock = threading.Lock()
        self.f = open(path, "a", buffering=1) if path else None
        self.label = label
        self.quiet = quiet
        self.count = 0

    def record(self, rec: dict) -> None:
        with self.lock:
            self.count += 1
            if self.f:
                self.f.write(json.dumps(rec, sort_keys=True) + "\n")
                self.f.flush()
            if not self.quiet:
                xff = next((v for k, v in rec["headers"] if k.lower() == "x-forwarded-for"), None)
                extra = f" xff={xff}" if xff else ""
                body = f" body={rec['body_len']}B" if rec["body_len"] else ""
                print(
                    f"[{self.label}] #{self.count} {rec['method']} {rec['target'][:100]} HTTP/1.{rec['version']}"
                    f" from {rec['peer']}{body}{' (chunked)' if rec['chunked'] else ''}{extra}",
                    flush=True,
                )


def make_handler(recorder: Recorder):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "mirrorfleet-demo"
        sys_version = ""

        def log_message(self, format, *args):  # noqa: A002 - silence the default access log
            pass

        def read_body(self) -> tuple[bytes, bool]:
            te = (self.headers.get("Transfer-Encoding") or "").lower()
            if "chunked" in te:
                out = bytearray()
                while True:
                    line = self.rfile.readline(65537)
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        # trailers until the empty line
                        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                            pass
                        return bytes(out), True
                    out += self.rfile.read(size)
                    self.rfile.readline(3)
            n = int(self.headers.get("Content-Length") or 0)
            return (self.rfile.read(n) if n else b""), False

        def handle_any(self):
            if (self.headers.get("Expect") or "").lower() == "100-continue":
                self.send_response_only(100)
                self.end_headers()
            body, chunked = self.read_body()
            rec = {
                "ts": time.time(),
                "peer": f"{self.client_address[0]}:{self.client_address[1]}",
                "method": self.command,
                "target": self.path,
                "version": 1 if self.request_version == "HTTP/1.1" else 0,
                "headers": [[k, v] for k, v in self.headers.raw_items()],
                "body_len": len(body),
                "body_b64": base64.b64encode(body).decode(),
                "chunked": chunked,
            }
            recorder.record(rec)
            reply = json.dumps({"ok": True, "seen": recorder.count}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any

    return Handler


def serve(args) -> None:
    host, port = split_hostport(args.listen)
    recorder = Recorder(args.record, args.label, args.quiet)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    srv = Server((host, port), make_handler(recorder))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown, daemon=True).start())
    print(f"[{args.label}] listening on {args.listen}", flush=True)
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write(f"{srv.server_address[1]}\n")
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    print(f"[{args.label}] stopped after {recorder.count} requests", flush=True)


def udp_sink(args) -> None:
    host, port = split_hostport(args.listen)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((host, port))
    s.settimeout(0.2)
    per_vni: dict[int, int] = {}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"[udp-sink] listening on {args.listen}", flush=True)

    def dump():
        if args.record:
            with open(args.record + ".tmp", "w") as f:
                json.dump({"datagrams": sum(per_vni.values()), "per_vni": {str(k): v for k, v in per_vni.items()}}, f)
            import os

            os.replace(args.record + ".tmp", args.record)

    last = 0.0
    while not stop.is_set():
        try:
            data, _ = s.recvfrom(65535)
        except socket.timeout:
            data = None
        except InterruptedError:
            continue
        if data is not None and len(data) >= 8 and data[0] & 0x08:
            vni = int.from_bytes(data[4:7], "big")
            per_vni[vni] = per_vni.get(vni, 0) + 1
        if time.monotonic() - last > 0.2:
            dump()
            last = time.monotonic()
    dump()


def load(path: str) -> list[dict]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def end_to_end(headers) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in headers if k.lower() not in NOT_END_TO_END]


def normalize(rec: dict) -> dict:
    """Accepts analyzer.py records and `rebuilder generate --truth` lines alike."""
    rec = dict(rec)
    rec.setdefault("peer", rec.get("client", ""))
    rec.setdefault("chunked", False)
    rec["body_b64"] = rec.get("body_b64") or ""
    return rec


def compare(args) -> int:
    # truth lines marked "expected": false are requests the capture cannot yield (e.g. lost bytes)
    sent = [normalize(r) for r in load(args.sent) if r.get("expected", True)]
    got = load(args.received)
    problems: list[str] = []
    unmatched = list(range(len(got)))
    rows = []
    for s in sent:
        key = (s["method"], s["target"], s["body_b64"])
        hits = [i for i in unmatched if (got[i]["method"], got[i]["target"], got[i]["body_b64"]) == key]
        status = "ok"
        if not hits:
            status = "MISSING"
            problems.append(f"not received: {s['method']} {s['target']}")
        else:
            i = hits[0]
            unmatched.remove(i)
            g = got[i]
            h_sent, h_got = end_to_end(s["headers"]), end_to_end(g["headers"])
            if h_sent != h_got:
                status = "HEADERS"
                problems.append(f"headers differ for {s['method']} {s['target']}: sent {h_sent} received {h_got}")
            xff = [v for k, v in g["headers"] if k.lower() == "x-forwarded-for"]
            client_ip = s["peer"].rsplit(":", 1)[0].strip("[]")
            if args.client_ip and client_ip != args.client_ip:
                status = "CLIENT"
                problems.append(f"web server saw client {client_ip}, expected {args.client_ip}")
            if not xff or client_ip not in [p.strip() for p in ",".join(xff).split(",")]:
                status = "XFF"
                problems.append(f"X-Forwarded-For {xff} lacks client {client_ip} for {s['method']} {s['target']}")
        rows.append((status, s["method"], s["target"][:70], str(s["body_len"]), "chunked" if s["chunked"] else ""))
    for i in unmatched:
        problems.append(f"unexpected or duplicate at the analyzer: {got[i]['method']} {got[i]['target']}")
        rows.append(("EXTRA", got[i]["method"], got[i]["target"][:70], str(got[i]["body_len"]), ""))
    if not args.quiet:
        hdr = ("match", "method", "target", "body", "")
        widths = [max(len(r[i]) for r in rows + [hdr]) for i in range(5)]
        for i, r in enumerate([hdr] + rows):
            print("    " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
            if i == 0:
                print("    " + "  ".join("-" * w for w in widths))
    print(f"  requests sent {len(sent)}, received by the analyzer {len(got)}, matched {len(sent) - sum(1 for r in rows if r[0] == 'MISSING')}")
    if args.expect_count is not None and len(sent) != args.expect_count:
        problems.append(f"the web server saw {len(sent)} requests, the client sent {args.expect_count}")
    for p in problems:
        print(f"  MISMATCH: {p}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sent": len(sent), "received": len(got), "problems": problems}, f)
    return 1 if problems else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--listen", default="127.0.0.1:8080")
    s.add_argument("--record", help="append one JSON object per request to this file")
    s.add_argument("--label", default="analyzer")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--ready-file", help="write the bound port here once listening")
    u = sub.add_parser("udp-sink")
    u.add_argument("--listen", default="0.0.0.0:4789")
    u.add_argument("--record", help="JSON file with the datagram counts, rewritten every 200 ms")
    c = sub.add_parser("compare")
    c.add_argument("--sent", required=True, help="the web server's records (or a rebuilder generate --truth file)")
    c.add_argument("--received", required=True, help="the analyzer's records")
    c.add_argument("--client-ip", help="the client's address the web server must have seen")
    c.add_argument("--expect-count", type=int, help="how many requests the client sent")
    c.add_argument("--json", help="write the verdict here")
    c.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    if args.cmd == "serve":
        serve(args)
    elif args.cmd == "udp-sink":
        udp_sink(args)
    else:
        sys.exit(compare(args))


if __name__ == "__main__":
    main()
