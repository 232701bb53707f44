"""The invariants checked on every simulated run.

* **agreement** — no two honest endpoints decide different values;
* **validity** — every honest decision is a value some proposal put on the
  wire, and it passes validation;
* **integrity** — every honest endpoint decides at most once;
* **termination** — after the network heals every honest endpoint decides
  (only expected while at most f members are Byzantine);
* **certificates** — every honest decision's certificate verifies against the
  group's public keys and proves that same value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocols.bft.certificate import verify_certificate
from protocols.bft.errors import CertificateError
from protocols.bft.messages import digest
from protocols.bft.sim.bus import SimResult


@dataclass
class Verdict:
    """Violations found, by invariant name (empty when the run is correct)."""

    violations: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations


def check(
    result: SimResult, *, public_keys: Mapping[str, str], validate: Callable[[Any], bool],
    expect_termination: bool = True,
) -> Verdict:
    """Check every invariant on one run's result."""
    verdict = Verdict()
    found = verdict.violations
    honest = result.honest
    firsts = {name: result.decisions[name][0] for name in honest if result.decisions[name]}
    distinct = {digest(d.value): d.value for d in firsts.values()}
    if len(distinct) > 1:
        found["agreement"] = "honest endpoints decided " + ", ".join(
            f"{name}={d.value!r}" for name, d in sorted(firsts.items())
        )
    for name, d in sorted(firsts.items()):
        if not validate(d.value) or digest(d.value) not in result.proposed:
            found["validity"] = f"{name} decided {d.value!r}, which was not a valid proposal"
        try:
            proved = verify_certificate(d.certificate, public_keys)
        except CertificateError as exc:
            found["certificates"] = f"{name}'s certificate does not verify: {exc}"
        else:
            if digest(proved) != digest(d.value):
                found["certificates"] = f"{name}'s certificate proves {proved!r}, not {d.value!r}"
    for name in honest:
        if len(result.decisions[name]) > 1:
            found["integrity"] = f"{name} decided {len(result.decisions[name])} times"
    undecided = sorted(set(honest) - set(firsts))
    if expect_termination and undecided:
        found["termination"] = f"{undecided} undecided at t={result.end_time:.2f} after healing"
    return verdict
