"""What the kernel still holds for a peer: how the fan-out tells a stalled client early."""

from __future__ import annotations

import fcntl
import socket
import struct
import termios


def unsent_bytes(sock: socket.socket) -> int:
    """Bytes in the socket's kernel send queue not yet acknowledged by the peer (Linux
    SIOCOUTQ; 0 where it cannot be read)."""
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", raw)[0])
