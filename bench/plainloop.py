"""``python -m bench.plainloop EDITS RESULTS URL RATE``: the least a client can do to send every
edit of EDITS at RATE per second, the yardstick for batchedit's CPU time.

aiohttp and aiolimiter, 100 workers, one result line written per edit (one ``write`` each, as
batchedit's results log does); no validation, retries, ordering per message or summary.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from pathlib import Path

import aiohttp
import orjson
from aiolimiter import AsyncLimiter

from batchedit.im import usersig
from bench.common import ADMIN, SDKAPPID, SECRET

WORKERS = 100


async def send_all(lines: list[bytes], results: Path, url: str, rate: float) -> None:
    """Send each of ``lines`` once, at ``rate``; a line per answer to ``results``."""
    sig = usersig.generate(SDKAPPID, SECRET, ADMIN)
    limiter = AsyncLimiter(rate, 1)
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for number, line in enumerate(lines, start=1):
        queue.put_nowait((number, line))
    fd = os.open(results, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    connector = aiohttp.TCPConnector(limit=WORKERS)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                number, line = queue.get_nowait()
                query = (
                    f"{url}/v4/openim/modify_c2c_msg?sdkappid={SDKAPPID}&identifier={ADMIN}"
                    f"&usersig={sig}&random={random.getrandbits(32)}&contenttype=json"
                )
                async with limiter, session.post(query, data=line) as response:
                    answer = orjson.loads(await response.read())
                row = {"line": number, "ErrorCode": answer.get("ErrorCode")}
                os.write(fd, orjson.dumps(row) + b"\n")

        await asyncio.gather(*(worker() for _ in range(WORKERS)))
    os.close(fd)


if __name__ == "__main__":
    edits_file, results_file, base_url, per_second = sys.argv[1:]
    edits = Path(edits_file).read_bytes().splitlines()
    asyncio.run(send_all(edits, Path(results_file), base_url, float(per_second)))
