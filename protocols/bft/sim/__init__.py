"""The deterministic simulation harness for Byzantine agreement.

* :mod:`.bus` — the seeded in-memory bus with a virtual clock (:class:`Schedule`).
* :mod:`.byzantine` — one participant class per Byzantine behaviour.
* :mod:`.scenario` — n members, some Byzantine, under a schedule; :func:`simulate`.
* :mod:`.invariants` — agreement, validity, integrity, termination, certificates.
"""

from protocols.bft.sim.bus import Cut, Endpoint, Partition, Schedule, SimBus, SimNode, SimResult
from protocols.bft.sim.byzantine import BEHAVIOURS, Context
from protocols.bft.sim.invariants import Verdict, check
from protocols.bft.sim.scenario import Scenario, endpoints, member_ids, public_keys, signer_for, simulate, validate

__all__ = [
    "BEHAVIOURS", "Context", "Cut", "Endpoint", "Partition", "Scenario", "Schedule", "SimBus", "SimNode", "SimResult",
    "Verdict", "check", "endpoints", "member_ids", "public_keys", "signer_for", "simulate", "validate",
]
