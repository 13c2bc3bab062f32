#!/usr/bin/env python3
"""A tiny BitTorrent HTTP tracker for the leak lab, and the .torrent file that names it.
Python 3 standard library only.

    tracker.py serve --addr 10.99.0.1 --port 6969 [--device wgs0] --log FILE --ready FILE
        Listens on ADDR:PORT only, and with --device only for connections that arrive on
        that interface (SO_BINDTODEVICE; the lab runs it in the ISP namespace on the VPN
        server's tunnel address and interface: a client reaches it only through the
        tunnel, not by sending to 10.99.0.1 over the physical link). Each announce
        (GET /announce?info_hash=...) is one line in --log:
            announce EPOCH_SECONDS SOURCE_ADDRESS INFO_HASH_HEX EVENT PORT
        (EVENT "-" when the client sent none), answered with a valid bencoded reply and no
        peers. Anything else gets a bencoded "failure reason".

    tracker.py make-torrent --file PATH --announce URL --out FILE.torrent
        A single-file torrent of PATH (piece length 16384); prints its info hash (hex).
"""
import argparse
import hashlib
import http.server
import os
import socket
import sys
import threading
import time
import urllib.parse

PIECE_LENGTH = 16384


def bencode(value):
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def query_bytes(query):
    """The raw query string as {name: bytes}: info_hash and peer_id are 20 arbitrary bytes,
    which parse_qs would decode as text."""
    out = {}
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        out[urllib.parse.unquote(name)] = urllib.parse.unquote_to_bytes(value.replace("+", " "))
    return out


class Tracker(http.server.BaseHTTPRequestHandler):
    interval = 30
    log_path = ""
    lock = threading.Lock()

    def reply(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        args = query_bytes(url.query)
        info_hash = args.get("info_hash", b"")
        if url.path != "/announce" or len(info_hash) != 20:
            self.reply(bencode({"failure reason": "not an announce"}))
            return
        event = args.get("event", b"").decode("ascii", "replace") or "-"
        port = args.get("port", b"").decode("ascii", "replace") or "-"
        line = f"announce {time.time():.6f} {self.client_address[0]} {info_hash.hex()} {event} {port}\n"
        with self.lock, open(self.log_path, "a") as f:
            f.write(line)
        # "min interval" 1: a forced re-announce (qBittorrent's WebUI) is not held back by
        # the 30 s libtorrent assumes when a tracker names none.
        self.reply(bencode({"interval": self.interval, "min interval": 1, "peers": b""}))

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    device = ""

    def server_bind(self):
        if self.device:
            self.socket.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_BINDTODEVICE", 25),
                                   self.device.encode())
        super().server_bind()


def serve(opts):
    Tracker.interval = opts.interval
    Tracker.log_path = opts.log
    open(opts.log, "a").close()
    Server.device = opts.device
    server = Server((opts.addr, opts.port), Tracker)
    with open(opts.ready, "w") as f:
        f.write("ready\n")
    server.serve_forever()


def make_torrent(opts):
    with open(opts.file, "rb") as f:
        data = f.read()
    pieces = b"".join(
        hashlib.sha1(data[i:i + PIECE_LENGTH]).digest() for i in range(0, len(data), PIECE_LENGTH)
    )
    info = {
        "name": os.path.basename(opts.file),
        "length": len(data),
        "piece length": PIECE_LENGTH,
        "pieces": pieces,
    }
    with open(opts.out, "wb") as f:
        f.write(bencode({"announce": opts.announce, "created by": "killswitch lab", "info": info}))
    print(hashlib.sha1(bencode(info)).hexdigest())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--addr", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--device", default="")
    s.add_argument("--log", required=True)
    s.add_argument("--ready", required=True)
    s.add_argument("--interval", type=int, default=30)
    m = sub.add_parser("make-torrent")
    m.add_argument("--file", required=True)
    m.add_argument("--announce", required=True)
    m.add_argument("--out", required=True)
    opts = parser.parse_args()
    if opts.cmd == "serve":
        serve(opts)
    else:
        make_torrent(opts)


if __name__ == "__main__":
    sys.exit(main())
