"""Paging through a conversation's history with ``admin_getroammsg`` (spec section 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from batchedit.client import ImClient, Reply, RoamMessage
from batchedit.errors import ApiError

PageFetcher = Callable[[str | None, int], Awaitable[Reply]]
"""Fetches one page: given ``LastMsgKey`` (or ``None``) and ``MaxTime``, returns the reply."""


async def iter_history(
    client: ImClient,
    operator: str,
    peer: str,
    min_time: int,
    max_time: int,
    *,
    max_cnt: int = 100,
    fetch: PageFetcher | None = None,
) -> AsyncIterator[RoamMessage]:
    """Yield every message of ``operator``'s view of the conversation in ``[min_time, max_time]``.

    Pages come newest first, each page's messages oldest first, as the server sends them. Each
    follow-up request keeps ``MinTime`` and ``MaxCnt``, sets ``MaxTime`` to the previous page's
    ``LastMsgTime`` and passes its ``LastMsgKey``, until ``Complete`` is 1. ``fetch`` replaces the
    plain call (a caller adds rate limiting and retries there). A failed page raises
    :class:`ApiError`.
    """

    async def plain(last_key: str | None, upper: int) -> Reply:
        return await client.admin_getroammsg(operator, peer, min_time, upper, max_cnt, last_key)

    get_page = fetch or plain
    last_key: str | None = None
    upper = max_time
    while True:
        reply = await get_page(last_key, upper)
        if not reply.ok:
            raise ApiError("openim/admin_getroammsg", reply.code, reply.info)
        for item in reply.data.get("MsgList", []):
            yield RoamMessage.from_json(item)
        if reply.data.get("Complete", 1) == 1 or not reply.data.get("MsgList"):
            return
        upper = int(reply.data["LastMsgTime"])
        last_key = str(reply.data["LastMsgKey"])
