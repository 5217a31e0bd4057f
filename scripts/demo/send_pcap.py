#!/usr/bin/env python3
"""Send the VXLAN payloads of a pcap capture as UDP datagrams (the loopback stand-in for the
AWS mirror when there are no network namespaces).

  send_pcap.py CAPTURE --to 127.0.0.1:4789 [--pps 20000] [--max-seconds 60]

Reads classic pcap (either byte order, µs or ns timestamps) with Ethernet frames; every
IPv4/IPv6 UDP datagram to port 4789 (after any 802.1Q tags) has its UDP payload (VXLAN header
first) sent to --to. Bounded: stops after --max-seconds whatever happens. Prints the count.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time


def frames(path: str):
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            sys.exit(f"send_pcap: {path}: not a pcap file (too short)")
        magic = head[:4]
        if magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            endian = ">"
        elif magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            endian = "<"
        else:
            sys.exit(f"send_pcap: {path}: not a classic pcap file (magic {magic.hex()})")
        linktype = struct.unpack(endian + "I", head[20:24])[0]
        if linktype != 1:
            sys.exit(f"send_pcap: {path}: link type {linktype}, only Ethernet (1) is supported")
        offset = 24
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return
            _, _, incl, _ = struct.unpack(endian + "IIII", rec)
            data = f.read(incl)
            if len(data) < incl:
                sys.exit(f"send_pcap: {path}: truncated record at offset {offset}")
            offset += 16 + incl
            yield data


def vxlan_payload(frame: bytes) -> bytes | None:
    eth_type = int.from_bytes(frame[12:14], "big")
    off = 14
    while eth_type in (0x8100, 0x88A8) and len(frame) >= off + 4:
        eth_type = int.from_bytes(frame[off + 2 : off + 4], "big")
        off += 4
    if eth_type == 0x0800:
        ihl = (frame[off] & 0x0F) * 4
        if frame[off + 9] != 17:
            return None
        udp = off + ihl
    elif eth_type == 0x86DD:
        if frame[off + 6] != 17:  # no extension headers on the outer header of a mirror
            return None
        udp = off + 40
    else:
        return None
    if int.from_bytes(frame[udp + 2 : udp + 4], "big") != 4789:
        return None
    length = int.from_bytes(frame[udp + 4 : udp + 6], "big")
    return frame[udp + 8 : udp + length]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("capture")
    p.add_argument("--to", required=True, help="HOST:PORT")
    p.add_argument("--pps", type=float, default=20000.0, help="datagrams per second (0 = as fast as possible)")
    p.add_argument("--max-seconds", type=float, default=60.0)
    args = p.parse_args()
    host, _, port = args.to.rpartition(":")
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    dest = (host.strip("[]"), int(port))
    start = time.monotonic()
    sent = 0
    for frame in frames(args.capture):
        payload = vxlan_payload(frame)
        if payload is None:
            continue
        if args.pps > 0:
            due = start + sent / args.pps
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
        if time.monotonic() - start > args.max_seconds:
            print(f"send_pcap: stopped after {args.max_seconds}s", file=sys.stderr)
            break
        s.sendto(payload, dest)
        sent += 1
    print(f"sent {sent} datagrams to {args.to}")


if __name__ == "__main__":
    main()
