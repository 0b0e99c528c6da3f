#!/usr/bin/env python3
"""Writes the front_door seed corpus: the raw HTTP/1 framing cases of reliability.md §6.2
(the smuggling probe), a few routed requests, and h2c prior-knowledge exchanges built with
python `h2`. The first byte of every seed is the drain mode the harness applies (0 = serving,
1 = draining at accept, 2 = closing mid-connection). Run from fuzz/: python3 make_front_door_seeds.py
"""
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "front_door")

H = b"Host: web\r\n"
cases = {
    "baseline": b"GET / HTTP/1.1\r\n" + H + b"\r\n",
    "keepalive-two": b"GET /a HTTP/1.1\r\n" + H + b"\r\nGET /direct HTTP/1.1\r\n" + H + b"\r\n",
    "cl-te": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n",
    "dup-cl-differing": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "dup-cl-same": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "cl-list": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3, 3\r\n\r\nabc",
    "cl-plus": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +3\r\n\r\nabc",
    "cl-hex": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x3\r\n\r\nabc",
    "te-gzip": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nabc",
    "te-chunked-gzip": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "te-xchunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "te-space-colon": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "te-http10": b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\n" + b"Host: web\n\n",
    "nul-in-value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    "chunk-size-overflow": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\na\r\n0\r\n\r\n",
    "chunk-ext-bare-lf": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3;ext\nabc\r\n0\r\n\r\n",
    "no-host": b"GET / HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\n" + H + b"Host: other\r\n\r\n",
    "101-headers": b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n",
    "header-61k": b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * (61 * 1024) + b"\r\n\r\n",
    "canary": b"GET /x HTTP/1.1\r\n" + H + b"x-canary: yes\r\n\r\n",
    "redirect": b"GET /old/path HTTP/1.1\r\n" + H + b"\r\n",
    "abort": b"GET /abort HTTP/1.1\r\n" + H + b"\r\n",
    "rewrite": b"GET /re/abc?q=1 HTTP/1.1\r\n" + H + b"\r\n",
    "unknown-host": b"GET / HTTP/1.1\r\nHost: nowhere.example\r\n\r\n",
    "absolute-uri": b"GET http://web/direct HTTP/1.1\r\nHost: other\r\n\r\n",
    "dot-segments": b"GET /a/../%2e%2e/direct HTTP/1.1\r\n" + H + b"\r\n",
    "upgrade": b"GET / HTTP/1.1\r\n" + H + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    "expect-100": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
    "chunked-trailers": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
}


def h2_cases():
    try:
        import h2.config
        import h2.connection
    except ImportError:
        print("python h2 missing: h2 seeds skipped (pip install h2)")
        return {}
    out = {}
    for name, hdrs, body, extra in [
        ("h2-get", [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "web")], None, None),
        ("h2-direct", [(":method", "GET"), (":path", "/direct"), (":scheme", "http"), (":authority", "web")], None, None),
        ("h2-post", [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "web"), ("content-length", "5")], b"hello", None),
        ("h2-reset", [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "web")], None, "reset"),
        ("h2-ping-settings", [(":method", "GET"), (":path", "/old"), (":scheme", "http"), (":authority", "web")], None, "ping"),
    ]:
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        c.send_headers(1, hdrs, end_stream=body is None and extra != "reset")
        if body is not None:
            c.send_data(1, body, end_stream=True)
        if extra == "reset":
            c.reset_stream(1)
        if extra == "ping":
            c.ping(b"12345678")
            c.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 10})
        out[name] = c.data_to_send()
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    every = dict(cases)
    every.update(h2_cases())
    for name, payload in sorted(every.items()):
        for mode in (0, 1, 2) if name in ("baseline", "keepalive-two", "h2-get") else (0,):
            path = os.path.join(OUT, "seed-%s-mode%d" % (name, mode))
            with open(path, "wb") as f:
                f.write(bytes([mode]) + payload)
    print("wrote %d seeds to %s" % (len(os.listdir(OUT)), OUT))


if __name__ == "__main__":
    main()
