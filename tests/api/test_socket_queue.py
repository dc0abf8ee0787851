"""The kernel send queue of a real TCP connection on 127.0.0.1, as the fan-out reads it."""

from __future__ import annotations

import socket

from tapescan.api.socket_queue import unsent_bytes

SEND_BUFFER = 64 * 1024  # as the server caps it (ws_transport.SEND_BUFFER_BYTES)


def test_unsent_bytes_show_a_peer_that_does_not_read_and_clear_when_it_does() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()) as peer:
            server, _ = listener.accept()
            with server:
                server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
                server.setblocking(False)
                assert unsent_bytes(server) == 0
                sent = 0
                try:
                    while True:
                        sent += server.send(b"x" * 65536)
                except BlockingIOError:
                    pass
                assert 0 < unsent_bytes(server) <= sent
                received = 0
                while received < sent:
                    received += len(peer.recv(1 << 20))
                assert unsent_bytes(server) == 0  # all read: acknowledged
