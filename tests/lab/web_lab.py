#!/usr/bin/env python3
"""The lab's "internet" for real clients: a DNS responder (UDP port 53) that answers every
name under .lab with A 203.0.113.10 and AAAA 2001:db8:ff::10 (NXDOMAIN for anything
else), and an HTTP server on port 8080 of every address. Both log one line per request
(client address, what was asked) to --log. Runs in the lab's ISP namespace.

    web_lab.py --log FILE --ready FILE
"""
import http.server
import socket
import socketserver
import struct
import sys
import threading

A = socket.inet_pton(socket.AF_INET, "203.0.113.10")
AAAA = socket.inet_pton(socket.AF_INET6, "2001:db8:ff::10")


def log(line):
    with open(LOG, "a") as f:
        f.write(line + "\n")


def answer(query):
    qid, flags, qd = struct.unpack("!HHH", query[:6])
    pos, labels = 12, []
    while query[pos]:
        labels.append(query[pos + 1:pos + 1 + query[pos]].decode("ascii", "replace"))
        pos += 1 + query[pos]
    qtype, _ = struct.unpack("!HH", query[pos + 1:pos + 5])
    question = query[12:pos + 5]
    name = ".".join(labels).lower()
    ours = name.endswith(".lab") or name == "lab"
    rdata = {1: A, 28: AAAA}.get(qtype) if ours else None
    header = struct.pack("!HHHHHH", qid, 0x8180 if ours else 0x8183, 1, 1 if rdata else 0, 0, 0)
    body = question
    if rdata:
        body += struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(rdata)) + rdata
    return name, qtype, header + body


def dns_loop(family, address):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, 53))
    while True:
        query, peer = s.recvfrom(1500)
        try:
            name, qtype, reply = answer(query)
        except (IndexError, struct.error):
            continue
        log(f"dns {peer[0]} {name} {qtype}")
        s.sendto(reply, peer)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        log(f"http {self.client_address[0]} {self.path}")
        body = b"hello from the lab internet\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server6(socketserver.ThreadingMixIn, http.server.HTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


if __name__ == "__main__":
    LOG = sys.argv[sys.argv.index("--log") + 1]
    ready = sys.argv[sys.argv.index("--ready") + 1]
    threading.Thread(target=dns_loop, args=(socket.AF_INET, "0.0.0.0"), daemon=True).start()
    server = Server6(("::", 8080), Handler)
    with open(ready, "w") as f:
        f.write("ready\n")
    server.serve_forever()
