"""A free TCP port for the tests' multi-rank runs, whose ranks must all be told one port before any of them starts.

Picked here and bound seconds later by rank 0's store: another process could take it between. Only the tests' own
runs compete for ports on the machine that runs them, and a one-process run binds port 0 (megadalle.train.
distributed), so none of those does.
"""
import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
