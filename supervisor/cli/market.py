"""``foundation market auction``: offer one task to a market pool's live agents, by hand.

The command finds the pool's ready and busy agents in the registry, sends
them a Contract Net cfp carrying the task (the same offer a market pool's
dispatcher sends, :mod:`workers.contractor`), and prints every answer —
proposal with its price and load, or refusal with its reason, or silence —
then the winner, the price it is paid, and the result of the task it ran.

Auction rules over the agents' asks (the lowest ask wins; ties go to the
smallest agent id; asks above ``--max-price`` cannot win):

* ``first-price``: the winner is paid its own ask (what Contract Net does);
* ``vickrey``: the winner is paid the second-lowest ask, or ``--max-price``
  when it is the only bidder — computed with :func:`protocols.market.vickrey`
  as a sale of ``max-price - ask``, so bidding one's true cost stays dominant.

The task runs like any market-dispatched task, but outside the ``TASKS``
stream: nothing is stored on ``results.<pool>``. Exit code 1, with what each
agent answered, when nobody proposes or the winner fails.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import time
from typing import Any

from broker import CodecError, decode, encode, subjects
from config import Config
from config.errors import FoundationError
from protocols.market import (
    Bid,
    ContractNetError,
    ContractNetInitiator,
    Conversation,
    Proposal,
    first_price,
    messages,
    vickrey,
)
from protocols.metrics import forward as forward_rounds
from protocols.registry import ACCEPTING, open_registry
from supervisor.cli.common import add_client_options, connect_client, load
from supervisor.cli.output import add_json_option, emit
from workers.contractor import Offer

KINDS = ("first-price", "vickrey")


def register(sub: Any) -> None:
    p = sub.add_parser("market", help="market pools: auctions among live agents")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    a = verbs.add_parser(
        "auction", help="offer one task to a market pool's live agents; print their bids, the winner, the result"
    )
    a.add_argument("--pool", required=True, help="a pool with dispatch = \"market\"")
    a.add_argument("--task", required=True, metavar="JSON", help="the task body, a JSON document")
    a.add_argument("--task-id", help="the task's id (default: manual-<random>)")
    a.add_argument("--kind", choices=KINDS, default="first-price", help="what the winner is paid (default first-price)")
    a.add_argument("--max-price", type=float, help="the most the task may cost; higher asks cannot win")
    a.add_argument("--reply-within", type=float, default=0.5, help="seconds the agents have to bid (default 0.5)")
    a.add_argument("--timeout", type=float, default=30.0,
                   help="seconds the winner may stay silent while it works (default 30)")
    add_json_option(a)
    add_client_options(a)
    a.set_defaults(func=run_auction)


def run_auction(args: argparse.Namespace) -> int:
    cfg = load(args)
    pool = cfg.pools.get(args.pool)
    if pool is not None and pool.dispatch != "market":
        raise FoundationError(
            f"pool {args.pool!r} dispatches by {pool.dispatch}; only the agents of a pool with "
            f"pools.{args.pool}.dispatch = \"market\" answer calls for proposals"
        )
    if not args.reply_within > 0 or not args.timeout > 0:
        raise FoundationError("--reply-within and --timeout must be positive")
    if args.max_price is not None and not (math.isfinite(args.max_price) and args.max_price >= 0):
        raise FoundationError(f"--max-price must be a finite number >= 0, got {args.max_price}")
    try:
        payload = decode(args.task.encode())
    except CodecError as exc:
        raise FoundationError(f"--task is not valid JSON: {exc}") from None
    report = asyncio.run(_auction(cfg, args, payload))
    emit(report, args, _text)
    if report.get("error"):
        raise FoundationError(report["error"])
    return 0


async def _auction(cfg: Config, args: argparse.Namespace, payload: Any) -> dict[str, Any]:
    task_id = args.task_id or f"manual-{os.urandom(6).hex()}"
    nc = await connect_client(args, cfg, "foundation market")
    try:
        async with open_registry(nc) as registry:
            agents = sorted(e.id for e in registry.find(pool=args.pool) if e.status in ACCEPTING)
        if not agents:
            raise FoundationError(
                f"no live agent of pool {args.pool!r} in the registry; is a node running it? "
                f"(`foundation registry ls --pool {args.pool}`)"
            )
        initiator = ContractNetInitiator(
            nc, args.pool, participants=agents, name=f"cli-{os.getpid()}", scorer=_scorer(args.max_price),
            reply_within=args.reply_within, silence_timeout=args.timeout, max_rounds=1,
        )
        offer = Offer(payload, 1, {subjects.MSG_ID: task_id}).body()
        t0 = time.perf_counter()
        report: dict[str, Any] = {"task_id": task_id, "pool": args.pool, "kind": args.kind, "agents": agents}
        try:
            won = await initiator.run(offer, task_id=task_id)
        except ContractNetError as exc:
            conv = exc.conversations[-1] if exc.conversations else None
            report["answers"] = _answers(conv) if conv else []
            report["error"] = _why(exc, conv, args)
            return report
        conv = won.conversations[-1]
        report["answers"] = _answers(conv)
        body = won.result if isinstance(won.result, dict) else {"result": won.result}
        report.update(
            winner=won.winner, worker=body.get("worker", won.winner), ask=won.price,
            payment=_payment(args.kind, report["answers"], won.winner, args.max_price),
            result=body.get("result"), handler_ms=body.get("duration_ms"),
            elapsed_ms=round((time.perf_counter() - t0) * 1000, 3),
        )
        return report
    finally:
        await forward_rounds(nc)  # the auction counts in a node's metrics
        await nc.close()


def _scorer(max_price: float | None) -> Any:
    def score(proposal: Proposal) -> float:
        # Lowest ask wins (the initiator breaks ties toward the smaller id);
        # an ask over the maximum is invalid: NaN makes the initiator reject it.
        return math.nan if max_price is not None and proposal.price > max_price else -proposal.price

    return score


def _answers(conv: Conversation) -> list[dict[str, Any]]:
    """Each addressed agent's answer to the cfp, in agent-id order."""
    seen: dict[str, dict[str, Any]] = {}
    for r in conv.records:
        if r.direction != "in" or r.performative not in (messages.PROPOSE, messages.REFUSE) or r.peer in seen:
            continue
        body = r.body if isinstance(r.body, dict) else {}
        answer: dict[str, Any] = {"agent": r.peer, "answer": r.performative, "at_ms": round(r.at * 1000, 3)}
        if r.performative == messages.PROPOSE:
            answer.update(price=body.get("price"), load=body.get("load"))
        else:
            answer["reason"] = body.get("reason", "")
        if r.note:
            answer["note"] = r.note
        seen[r.peer] = answer
    for agent in conv.addressed:
        seen.setdefault(agent, {"agent": agent, "answer": "silent"})
    return [seen[a] for a in sorted(seen)]


def _payment(kind: str, answers: list[dict[str, Any]], winner: str, max_price: float | None) -> float:
    """What the winner is paid under ``kind``, from the on-time asks (agent-id order is submission order)."""
    asks = [(a["agent"], float(a["price"])) for a in answers if a["answer"] == messages.PROPOSE and not a.get("note")]
    ceiling = max_price if max_price is not None else max(price for _, price in asks)
    # A procurement auction is a sale of the buyer's surplus: bid ceiling - ask.
    bids = [Bid(agent, ceiling - price) for agent, price in asks]
    outcome = (vickrey if kind == "vickrey" else first_price)(bids)
    award = outcome.award_of(winner)
    if award is None:  # cannot happen: both pick the lowest ask, ties to the first (smallest id)
        raise FoundationError(f"the {kind} rule and Contract Net chose different winners; please report this")
    return ceiling - award.payment


def _why(exc: ContractNetError, conv: Conversation | None, args: argparse.Namespace) -> str:
    if conv is None or conv.winner is None:
        silent = [a for a in (conv.addressed if conv else ()) if not any(r.peer == a for r in conv.records)]
        hint = (f"; silent agents may not be in a market pool (pools.{args.pool}.dispatch = \"market\")"
                if silent else "")
        cap = f" at or under {args.max_price:g}" if args.max_price is not None else ""
        return f"no agent of pool {args.pool!r} proposed{cap} within {args.reply_within:g}s{hint}"
    failure = [r.body.get("reason", "") for r in conv.received(messages.FAILURE) if isinstance(r.body, dict)]
    if conv.outcome == messages.TIMEOUT:
        return f"the winner {conv.winner} went silent for {args.timeout:g}s and was cancelled"
    return f"the winner {conv.winner} failed: {failure[-1] if failure else exc}"


def _text(report: dict[str, Any]) -> str:
    agents = len(report["agents"])
    lines = [f"cfp for task {report['task_id']} to {agents} agent(s) of pool {report['pool']} ({report['kind']})"]
    lines.append(f"  {'AGENT':<28} {'ANSWER':<8} {'PRICE':>10} {'LOAD':>5}  NOTE")
    for a in report.get("answers", []):
        price = f"{a['price']:.4f}" if isinstance(a.get("price"), (int, float)) else ""
        load = str(a.get("load", "")) if a.get("load") is not None else ""
        note = a.get("reason") or a.get("note") or ""
        lines.append(f"  {a['agent']:<28} {a['answer']:<8} {price:>10} {load:>5}  {note}")
    if report.get("error"):
        return "\n".join(lines)
    rule = "its ask" if report["kind"] == "first-price" else "the second-lowest ask"
    lines.append(f"winner: {report['winner']} (worker {report['worker']}), ask {report['ask']:.4f}, "
                 f"paid {report['payment']:.4f} ({report['kind']}: {rule})")
    handler = f"handler {report['handler_ms']:.1f} ms, " if isinstance(report.get("handler_ms"), (int, float)) else ""
    lines.append(f"result: {encode(report['result']).decode()}  ({handler}{report['elapsed_ms']:.1f} ms in all)")
    return "\n".join(lines)
