"""
A TCP forwarder that puts a target "far away", in its own process::

    python bench/delay.py TARGET_PORT DELAY_MS

Listens on 127.0.0.1 (a free port) and prints ``READY <port>``.  For every
connection it accepts, it waits DELAY_MS before it connects to
127.0.0.1:TARGET_PORT (connection set-up); after that every chunk read from one
side is written to the other side DELAY_MS after it was read, in both
directions.  So each request/response exchange costs 2 x DELAY_MS more and a new
connection another DELAY_MS; chunks are not held back behind each other, so
the bandwidth is not limited (up to 64 chunks of 256 kB are in flight per
direction, then the reading side waits).
"""

from __future__ import annotations

import asyncio
import sys

CHUNK = 256 * 1024
IN_FLIGHT = 64


async def pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(IN_FLIGHT)

    async def read() -> None:
        while True:
            data = await reader.read(CHUNK)
            await queue.put((loop.time() + delay, data))
            if not data:
                return

    async def write() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    try:
        await asyncio.gather(read(), write())
    except (ConnectionError, OSError):
        pass


async def main(target: int, delay: float) -> None:
    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await asyncio.sleep(delay)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(
                pipe(reader, up_writer, delay), pipe(up_reader, writer, delay)
            )
        finally:
            up_writer.close()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python bench/delay.py TARGET_PORT DELAY_MS")
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]) / 1000))
