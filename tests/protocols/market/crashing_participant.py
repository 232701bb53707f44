"""A Contract Net participant in its own OS process, for crash tests.

Usage: ``python -m tests.protocols.market.crashing_participant URL GROUP AGENT PRICE``

It publishes ``test.market.<AGENT>.ready`` once subscribed and
``test.market.<AGENT>.started`` when it begins an awarded task; the task then
never finishes (heartbeats keep flowing) until the process is killed.
"""

from __future__ import annotations

import asyncio
import sys

from broker import connect, die_with_parent
from protocols.market import CallForProposals, ContractNetParticipant


async def main(url: str, group: str, agent: str, price: float) -> None:
    nc = await connect(url, name=agent)

    async def perform(cfp: CallForProposals) -> None:
        await nc.publish(f"test.market.{agent}.started", cfp.task_id.encode())
        await nc.flush()
        await asyncio.Event().wait()  # works forever: only SIGKILL ends it

    participant = ContractNetParticipant(nc, group, agent, bid=lambda cfp: price, perform=perform)
    await participant.start()
    await nc.publish(f"test.market.{agent}.ready", b"")
    await nc.flush()
    await asyncio.Event().wait()


if __name__ == "__main__":
    die_with_parent()
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
