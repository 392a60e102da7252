"""The ``ceiling`` suite's subject: the least a Python RESP server can do per command.

asyncio on uvloop, hiredis parsing, a dict, GET and SET only: no framing guard, no
namespaces, no expiry, no limits. What it reaches against redis-server is the ceiling
for any Python server on this machine; stashd's figures read best against it.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import hiredis
import uvloop

DATA: dict[bytes, bytes] = {}


class Protocol(asyncio.Protocol):
    """One connection: parse, touch the dict, answer with one write per read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)
        self.reader = hiredis.Reader()

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        out = bytearray()
        request = reader.gets()
        while request is not False:
            name = request[0].upper()
            if name == b"SET":
                DATA[request[1]] = request[2]
                out += b"+OK\r\n"
            elif name == b"GET":
                value = DATA.get(request[1])
                out += b"$-1\r\n" if value is None else b"$%d\r\n%b\r\n" % (len(value), value)
            else:  # PING, CONFIG GET from redis-benchmark: any simple answer will do
                out += b"+OK\r\n"
            request = reader.gets()
        self.transport.write(out)


async def serve(port: int) -> None:
    """Serve until killed."""
    server = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", port)
    await server.serve_forever()


def main() -> None:
    """``bare_resp.py --port N``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
