"""The listening-port check `sftpipe stack down` waits on tells a listener from a free or TIME_WAIT port."""

from __future__ import annotations

import socket

import pytest

from local.services import free_port, listening_ports


def _listener() -> tuple[socket.socket, int]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener, listener.getsockname()[1]


def test_a_listening_port_is_seen_until_its_socket_closes() -> None:
    listener, port = _listener()
    assert port in listening_ports()
    listener.close()
    assert port not in listening_ports()


def test_a_port_whose_connection_is_in_time_wait_is_not_listening() -> None:
    listener, port = _listener()
    client = socket.create_connection(("127.0.0.1", port))
    served, _ = listener.accept()
    served.close()  # the side that closes first keeps the TIME_WAIT entry on PORT
    client.close()
    listener.close()
    assert port not in listening_ports()


def test_an_ipv6_listener_is_seen() -> None:
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        listener.bind(("::1", 0))
    except OSError as exc:  # a machine without IPv6 loopback has no tcp6 listener to see
        listener.close()
        pytest.skip(f"no IPv6 loopback here: {exc}")
    listener.listen()
    port = listener.getsockname()[1]
    try:
        assert port in listening_ports()
    finally:
        listener.close()


def test_a_port_never_bound_is_not_listening() -> None:
    assert free_port() not in listening_ports()
