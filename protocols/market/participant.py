"""The Contract Net participant: bid on calls for proposals and perform awarded tasks.

Message sequence, seen from one participant (subjects in :mod:`.messages`)::

    group -> me        cfp                       (ignored unless ``to`` names me)
    me -> initiator    propose {price, …} | refuse {reason}       bid() decides
    initiator -> me    accept-proposal | reject-proposal           on my inbox
    me -> initiator    inform-progress every ``progress_every`` s while perform() runs
    me -> initiator    inform-result {result} | inform-done | failure {reason}
    initiator -> me    cancel                    perform() is cancelled

``bid(cfp)`` returns a price, a mapping with a ``price`` key (other keys go
to the initiator's scorer), ``None`` to refuse, or a string to refuse with
that reason (e.g. ``"full"``); it may be async. A bid that raises is a refuse
with the error as reason. ``perform(cfp)`` does the work;
a non-``None`` return value is sent as inform-result, ``None`` as
inform-done, an exception as failure. An async bid and each awarded task run
in their own asyncio task, so a slow bid or a long task never delays the
others; a plain-function bid answers inline and should be quick.

Untrusted input: any client can publish a cfp. Its numbers are checked
before anything is kept: ``reply_by`` and ``reply_within`` must be finite
(else the cfp is ignored with a warning naming the subject) and are cut to at
most :data:`MAX_REPLY_WINDOW` seconds ahead, ``round`` must be a positive
integer, ``to`` a list of strings; an award's ``progress_every`` is kept
within ``[MIN_PROGRESS, MAX_REPLY_WINDOW]``. At most :data:`MAX_PENDING`
proposals await an answer; past that the oldest are forgotten.

Stopping: :meth:`ContractNetParticipant.stop_bidding` ends bidding (an award
arriving afterwards is answered with failure at once);
:meth:`ContractNetParticipant.stop` then lets awarded work finish for up to
``drain`` seconds and reports what is left as failure, so initiators re-offer
it without waiting for their silence timeout. A participant that dies without
stopping goes silent, and its initiator re-offers after the timeout.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from broker import NATS_ERRORS, Connection, codec
from broker.subjects import is_inbox
from protocols.market import messages as m
from protocols.market.errors import ContractNetError

log = logging.getLogger("foundation.protocols.market")

BidFunction = Callable[[m.CallForProposals], Any]
"""cfp -> a price, a mapping with ``price``, ``None`` or a reason to refuse — or an awaitable of one."""
PerformFunction = Callable[[m.CallForProposals], Any]

# How long an unanswered proposal is remembered past its reply-by time: the
# initiator decides right at the deadline, so this only bounds memory when an
# initiator dies between cfp and award.
_PENDING_GRACE = 60.0
# How long past its reply-by a proposal still counts as possibly accepted
# (:attr:`ContractNetParticipant.pending`): the award follows the deadline
# within milliseconds unless the initiator died.
_AWARD_MARGIN = 1.0
MAX_REPLY_WINDOW = 60.0  # seconds: the furthest ahead a cfp's deadline may lie
MAX_PENDING = 10_000  # proposals awaiting their accept or reject
MIN_PROGRESS = 0.05  # seconds: the shortest progress period an initiator may ask for


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class ContractNetParticipant:
    """One agent answering the calls for proposals of its group.

    Use as an async context manager, or call :meth:`start` and :meth:`stop`.

    Args:
        nc: a connected NATS client.
        group: the group whose cfps this agent receives.
        agent_id: this agent's id (what initiators address and score).
        bid: decides the proposal for a cfp (see module docstring).
        perform: runs an awarded task.
        log_limit: how many message records to keep in :attr:`records`.
    """

    def __init__(
        self,
        nc: Connection,
        group: str,
        agent_id: str,
        *,
        bid: BidFunction,
        perform: PerformFunction,
        log_limit: int = 10_000,
    ) -> None:
        self.nc = nc
        self.group = group
        self.agent_id = agent_id
        self._bid = bid
        self._perform = perform
        self.records: deque[tuple[str, m.Record]] = deque(maxlen=log_limit)
        self._cfp_sub: Any = None
        self._inbox_sub: Any = None
        self._inbox = ""
        self._pending: dict[str, tuple[m.CallForProposals, str, float]] = {}
        self._work: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def load(self) -> int:
        """Awarded tasks in progress."""
        return len(self._work)

    @property
    def pending(self) -> int:
        """Proposals still awaiting their accept or reject: work this agent may yet be awarded.

        A bid function counts these with :attr:`load` so that an agent asked
        by many initiators at once does not promise more than it can do. A
        proposal stops counting a second past its reply-by time, so an
        initiator that died before awarding holds nothing for long.
        """
        now = time.time()
        return sum(1 for cfp, _, _ in self._pending.values() if cfp.reply_by + _AWARD_MARGIN > now)

    async def start(self) -> None:
        """Subscribe to the group's cfps and to this agent's inbox; returns once the server has both.

        Raises:
            ContractNetError: NATS refused the subscriptions.
        """
        self._inbox = self.nc.new_inbox()
        self._stopping = False
        try:
            self._inbox_sub = await self.nc.subscribe(self._inbox, cb=self._on_inbox)
            self._cfp_sub = await self.nc.subscribe(m.cfp_wildcard(self.group), cb=self._on_cfp)
            await self.nc.flush()
        except NATS_ERRORS as exc:
            raise ContractNetError(f"participant {self.agent_id} cannot subscribe: {exc}") from exc

    async def stop(self, *, drain: float = 0.0) -> None:
        """Stop bidding; let awarded work finish for up to ``drain`` seconds, then give it up.

        Work still running after ``drain`` is cancelled and reported as
        failure ``participant stopped``, so its initiator re-offers the task at
        once instead of waiting out its silence timeout.
        """
        await self.stop_bidding()
        if drain > 0 and self._work:
            await asyncio.wait(list(self._work.values()), timeout=drain)
        self._stopping = True
        tasks = [*self._tasks, *self._work.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._inbox_sub is not None:
            await _unsubscribe(self._inbox_sub)
            self._inbox_sub = None

    async def stop_bidding(self) -> None:
        """Stop answering cfps (awarded work and its messages go on); returns once the server knows."""
        if self._cfp_sub is None:
            return
        sub, self._cfp_sub = self._cfp_sub, None
        await _unsubscribe(sub)
        try:
            await self.nc.flush()
        except NATS_ERRORS:
            pass  # connection closed: nothing reaches this participant any more

    async def __aenter__(self) -> ContractNetParticipant:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def conversation(self, conversation_id: str) -> list[m.Record]:
        """This participant's records of one conversation."""
        return [r for cid, r in self.records if cid == conversation_id]

    def _record(self, cid: str, direction: str, performative: str, peer: str, body: Any, note: str = "") -> None:
        now = asyncio.get_running_loop().time()
        self.records.append((cid, m.Record(now, direction, performative, peer, body, note)))

    async def _send(self, subject: str, performative: str, cid: str, peer: str, body: Any) -> None:
        self._record(cid, "out", performative, peer, body)
        if not is_inbox(subject):  # the conversation's reply subject: answer on our own subject under it
            subject = m.answer_subject(subject, self.agent_id)
        await m.send(
            self.nc, subject, performative, conversation_id=cid, sender=self.agent_id, reply_to=self._inbox, body=body
        )

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _on_cfp(self, msg: Any) -> None:
        parsed = m.parse(msg)
        if parsed is None:
            return
        performative, cid, sender, reply_to, body = parsed
        if performative != m.CFP or not isinstance(body, dict) or not m.answer_to_ok(reply_to, self.group, cid):
            return
        if body.get("v", m.VERSION) != m.VERSION:
            self._record(cid, "in", performative, sender, body, note="unexpected")
            return  # a protocol revision this agent does not speak: stay silent (counts as no answer)
        to = body.get("to")
        if to is not None and (not isinstance(to, list) or self.agent_id not in to):
            return
        reply_by, within, rnd = body.get("reply_by", 0.0), body.get("reply_within", 0.0), body.get("round", 1)
        if not (_finite(reply_by) and _finite(within) and isinstance(rnd, int) and not isinstance(rnd, bool)
                and 1 <= rnd <= 1_000_000):
            log.warning("participant %s: cfp on %s ignored: reply_by %r, reply_within %r or round %r is not a "
                        "finite number", self.agent_id, msg.subject, reply_by, within, rnd)
            return
        self._record(cid, "in", performative, sender, body)
        cfp = m.CallForProposals(
            conversation_id=cid,
            task_id=str(body.get("task_id", "")),
            task=body.get("task"),
            initiator=sender,
            round=rnd,
            reply_by=min(float(reply_by), time.time() + MAX_REPLY_WINDOW),
            reply_within=min(max(float(within), 0.0), MAX_REPLY_WINDOW),
        )
        try:
            offer = self._bid(cfp)
        except Exception as exc:  # bid() is user code: its failure is a refusal, not a crash
            await self._answer(cfp, reply_to, None, codec.one_line(f"{type(exc).__name__}: {exc}"))
            return
        if inspect.isawaitable(offer):
            # An async bid may take a while: answer from its own task so other cfps go on.
            self._spawn(self._answer_later(cfp, reply_to, offer))
        else:
            await self._answer(cfp, reply_to, offer)

    async def _answer_later(self, cfp: m.CallForProposals, reply_to: str, pending: Awaitable[Any]) -> None:
        try:
            offer = await pending
        except Exception as exc:  # as above: a failed bid is a refusal
            await self._answer(cfp, reply_to, None, codec.one_line(f"{type(exc).__name__}: {exc}"))
        else:
            await self._answer(cfp, reply_to, offer)

    async def _answer(self, cfp: m.CallForProposals, reply_to: str, offer: Any, reason: str = "declined") -> None:
        loop = asyncio.get_running_loop()
        self._prune(loop.time())
        try:
            if offer is None or isinstance(offer, str):
                body = {"reason": offer if isinstance(offer, str) else reason}
                await self._send(reply_to, m.REFUSE, cfp.conversation_id, cfp.initiator, body)
                return
            body = dict(offer) if isinstance(offer, Mapping) else {"price": offer}
            expires = loop.time() + cfp.reply_within + _PENDING_GRACE
            self._pending.pop(cfp.conversation_id, None)
            self._pending[cfp.conversation_id] = (cfp, reply_to, expires)
            while len(self._pending) > MAX_PENDING:  # dicts keep insertion order: oldest first
                del self._pending[next(iter(self._pending))]
            await self._send(reply_to, m.PROPOSE, cfp.conversation_id, cfp.initiator, body)
        except ContractNetError as exc:
            log.warning("participant %s could not answer %s: %s", self.agent_id, cfp.conversation_id, exc)

    def _prune(self, now: float) -> None:
        for cid in [cid for cid, (_, _, exp) in self._pending.items() if exp < now]:
            del self._pending[cid]

    async def _on_inbox(self, msg: Any) -> None:
        parsed = m.parse(msg)
        if parsed is None:
            return
        performative, cid, sender, reply_to, body = parsed
        pending = self._pending.pop(cid, None) if performative in (m.ACCEPT, m.REJECT) else None
        if performative == m.ACCEPT and pending is not None and self._cfp_sub is None:
            # Awarded after stop_bidding(): decline at once so the initiator re-offers now.
            self._record(cid, "in", performative, sender, body)
            subject = reply_to if reply_to and m.answer_to_ok(reply_to, self.group, cid) else pending[1]
            await self._send_quietly(subject, m.FAILURE, cid, sender, {"reason": "participant stopping"})
        elif performative == m.ACCEPT and pending is not None:
            self._record(cid, "in", performative, sender, body)
            cfp, initiator_subject, _ = pending
            every = body.get("progress_every") if isinstance(body, dict) else None
            every = min(max(float(every), MIN_PROGRESS), MAX_REPLY_WINDOW) if _finite(every) and every > 0 else None
            answer_to = reply_to if reply_to and m.answer_to_ok(reply_to, self.group, cid) else initiator_subject
            self._work[cid] = self._spawn(self._run(cfp, answer_to, every))
        elif performative == m.REJECT and pending is not None:
            self._record(cid, "in", performative, sender, body)
        elif performative == m.CANCEL and cid in self._work:
            self._record(cid, "in", performative, sender, body)
            self._work[cid].cancel()
        else:
            self._record(cid, "in", performative, sender, body, note="unexpected")
            if performative == m.ACCEPT and reply_to and m.answer_to_ok(reply_to, self.group, cid):
                # An award we cannot honour (forgotten or never proposed): say so at once
                # so the initiator re-offers instead of waiting out its silence timeout.
                body = {"reason": "no pending proposal for this conversation"}
                await self._send_quietly(reply_to, m.FAILURE, cid, sender, body)

    async def _run(self, cfp: m.CallForProposals, subject: str, every: float | None) -> None:
        cid = cfp.conversation_id
        ticker = self._spawn(self._progress(subject, cid, cfp.initiator, every)) if every else None
        try:
            try:
                result = self._perform(cfp)
                if inspect.isawaitable(result):
                    result = await result
            except asyncio.CancelledError:
                if self._stopping:
                    body = {"reason": "participant stopped"}
                    await self._send_quietly(subject, m.FAILURE, cid, cfp.initiator, body)
                raise
            except Exception as exc:  # the task failed: tell the initiator, which re-offers it
                ending, body = m.FAILURE, {"reason": codec.one_line(f"{type(exc).__name__}: {exc}")}
            else:
                ending, body = (m.INFORM_DONE, {}) if result is None else (m.INFORM_RESULT, {"result": result})
            if ticker is not None:
                ticker.cancel()
            try:
                codec.encode(body)
            except codec.CodecError as exc:
                ending, body = m.FAILURE, {"reason": codec.one_line(f"result is not JSON-serializable: {exc}")}
            await self._send(subject, ending, cid, cfp.initiator, body)
        except ContractNetError as exc:
            log.warning("participant %s could not report %s: %s", self.agent_id, cid, exc)
        finally:
            if ticker is not None:
                ticker.cancel()
            self._work.pop(cid, None)

    async def _progress(self, subject: str, cid: str, initiator: str, every: float) -> None:
        while True:
            await asyncio.sleep(every)  # a heartbeat period, not a wait for an event
            await self._send_quietly(subject, m.PROGRESS, cid, initiator, {})

    async def _send_quietly(self, subject: str, performative: str, cid: str, peer: str, body: Any) -> None:
        try:
            await self._send(subject, performative, cid, peer, body)
        except ContractNetError as exc:
            log.warning("participant %s could not send %s for %s: %s", self.agent_id, performative, cid, exc)


async def _unsubscribe(sub: Any) -> None:
    try:
        await sub.unsubscribe()
    except NATS_ERRORS:
        pass  # connection closed: the subscription went with it
