"""A TCP proxy on 127.0.0.1 in front of a real server (moto): it records the
HTTP requests that pass (method, path, headers) so tests can check what snap
sends on the wire, and can drop connections to simulate a dead network."""

from __future__ import annotations

import socket
import threading


class Proxy:
    def __init__(self, upstream_port: int, drop_after: int | None = None, stall: bool = False,
                 cut_response_after: int | None = None):  # fmt: skip
        """``drop_after``: close every connection once this many request bytes
        went upstream on it (None: never); with ``stall``, hold it open and
        forward nothing more instead (a hung network). ``cut_response_after``:
        close a connection once this many response bytes came back on it (a
        download that dies half way); can be changed while running."""
        self.upstream_port = upstream_port
        self.drop_after = drop_after
        self.stall = stall
        self.cut_response_after = cut_response_after
        self.cuts = 0
        self.requests: list[tuple[str, str, dict]] = []
        self.drops = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.sock.close()
        self._thread.join(5)

    def _accept(self):
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        threading.Thread(target=self._pipe_back, args=(upstream, client, self.cut_response_after), daemon=True).start()
        buf, sent, body_left = b"", 0, 0
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                if self.drop_after is not None and sent + len(data) > self.drop_after:
                    with self._lock:
                        self.drops += 1
                    while self.stall and not self._stop.is_set():
                        self._stop.wait(0.2)
                    break
                upstream.sendall(data)
                sent += len(data)
                buf += data
                while True:  # parse request heads as they complete
                    if body_left:
                        take = min(body_left, len(buf))
                        buf, body_left = buf[take:], body_left - take
                        if body_left:
                            break
                    head_end = buf.find(b"\r\n\r\n")
                    if head_end < 0:
                        break
                    head, buf = buf[:head_end].decode("latin-1"), buf[head_end + 4 :]
                    lines = head.split("\r\n")
                    method, path = (lines[0].split(" ") + ["", ""])[:2]
                    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
                    with self._lock:
                        self.requests.append((method, path, headers))
                    body_left = int(headers.get("content-length", "0") or 0)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def _pipe_back(self, upstream, client, cut):
        sent = 0
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                if cut is not None and sent + len(data) > cut:
                    client.sendall(data[: cut - sent])
                    with self._lock:
                        self.cuts += 1
                    for s in (client, upstream):
                        try:
                            s.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                    break
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass

    def find(self, method: str, query: str = "") -> list[tuple[str, str, dict]]:
        with self._lock:
            return [r for r in self.requests if r[0] == method and query in r[1]]
