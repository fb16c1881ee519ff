"""The listener takes every waiting connection per wake-up (torc_net.listener)."""

from __future__ import annotations

import socket

import trio
import trio.testing

from torc_net.listener import DrainingListener


async def test_waiting_connections_are_taken_without_a_pass_of_the_scheduler() -> None:
    """trio.SocketListener yields after each connection: under load, one connection per pass
    over every runnable task. This one hands out the whole backlog at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    listener = DrainingListener(sock)
    clients = [socket.create_connection(sock.getsockname()) for _ in range(20)]
    try:
        streams = [await listener.accept()]
        with trio.testing.assert_no_checkpoints():
            streams += [await listener.accept() for _ in range(19)]
        # Each is a working connection, in the order the clients connected.
        for k, client in enumerate(clients):
            client.sendall(b"%d\n" % k)
        for k, stream in enumerate(streams):
            assert await stream.receive_some(16) == b"%d\n" % k
            await stream.aclose()
        # An empty backlog: accept waits (blocked, nothing else to run) for the next client.
        accepted: list[trio.SocketStream] = []

        async def accept_one() -> None:
            accepted.append(await listener.accept())

        with trio.fail_after(5):
            async with trio.open_nursery() as waiting:
                waiting.start_soon(accept_one)
                await trio.testing.wait_all_tasks_blocked()
                assert accepted == []
                late = socket.create_connection(sock.getsockname())
        (stream,) = accepted
        late.sendall(b"late")
        assert await stream.receive_some(16) == b"late"
        await stream.aclose()
        late.close()
    finally:
        for client in clients:
            client.close()
        await listener.aclose()
