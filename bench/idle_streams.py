"""Issue 25: why the transport's connection is an asyncio.Protocol and not asyncio streams (bench/RESULTS.md).

A kept-alive connection must not be reused once anything arrived on it while idle. With streams and their
public API only, the watch is a task waiting in ``reader.read(1)`` while the connection is idle; before reuse,
one turn of the loop lets it run, then it is asked whether it ended and the socket whether bytes wait. Bytes
that the event loop read in the turn just before are seen by neither, and the next request reads them as
its answer. This shows it with a 408 written at an idle connection.

    python bench/idle_streams.py
"""

from __future__ import annotations

import asyncio
import select
import socket


async def main() -> None:
    near, far = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=near)
    readable = select.poll()
    readable.register(near.fileno(), select.POLLIN)
    watch = asyncio.ensure_future(reader.read(1))
    await asyncio.sleep(0.01)  # idle a while
    far.send(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")  # a gateway's idle timeout
    await asyncio.sleep(0)  # the loop's next turn reads the bytes, after this task's step
    await asyncio.sleep(0)  # the check before reuse: one turn for the watch, then ask it and the socket
    seen = watch.done() or bool(readable.poll(0))
    watch.cancel()
    await asyncio.wait([watch])
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n"), 1)
    print(f"arrival seen before reuse: {seen}; the next request would read {answer!r} as its answer")
    writer.close()
    far.close()


if __name__ == "__main__":
    asyncio.run(main())
