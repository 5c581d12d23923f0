"""The receiver's deadline for a whole body, on a socket pair (pure: no server)."""

from __future__ import annotations

import socket
import time

from app.web.body_deadline import BodyDeadlines


def test_a_read_still_waiting_at_the_deadline_ends_and_a_finished_one_is_left_alone() -> None:
    deadlines = BodyDeadlines(0.3, per_read=5.0, tick=0.05)
    server, client = socket.socketpair()
    try:
        client.sendall(b"lea")
        started = time.monotonic()
        with deadlines.reading(server):
            got = server.recv(3)
            got += server.recv(10)  # the rest never comes: the deadline ends the wait
        assert got == b"lea"
        assert 0.25 <= time.monotonic() - started < 2.0
    finally:
        server.close()
        client.close()
    server, client = socket.socketpair()
    try:
        with deadlines.reading(server):
            client.sendall(b"ds")
            assert server.recv(2) == b"ds"
        time.sleep(0.5)  # past the deadline, outside the block: the socket reads on
        client.sendall(b"!")
        server.settimeout(1)
        assert server.recv(1) == b"!"
    finally:
        server.close()
        client.close()
