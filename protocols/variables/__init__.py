"""Shared variables: a typed parameter space, changed only through a protocol.

* :mod:`.space` — the definitions (float/int with bounds and log scale,
  choice, bool) and their validation.
* :mod:`.approval` — the pluggable gate a change must pass: a consensus round
  among stakeholders by default, chainable with other gates (``AllOf``).
* :mod:`.byzantine` — the gate for a group declared Byzantine: a signed
  agreement decision (``ByzantineApproval``, members run
  ``ByzantineStakeholder``) whose certificate is stored with the value.
* :mod:`.store` — propose → validate → approve → apply (CAS) in the
  ``variables`` bucket, with the change history.
* :mod:`.view` — every process's live copy of the values, fed by a KV watch.

A change goes: ``VariableStore.propose(name, value)`` validates it against the
space (a clear :class:`VariableValidationError` otherwise), asks the gate
(:class:`ConsensusApproval` runs ``protocols.consensus.propose`` among the
stakeholders, who answer with :func:`stakeholder` voters), then writes it on
top of the version the gate saw; every :class:`VariableView` sees it at once.
"""

from protocols.variables.approval import (
    VARIABLES_GROUP,
    AllOf,
    Approval,
    ChangeRejectedError,
    ChangeRequest,
    ConsensusApproval,
    Verdict,
    stakeholder,
)
from protocols.variables.byzantine import (
    ByzantineApproval,
    ByzantineStakeholder,
    change_instance,
    verify_change,
)
from protocols.variables.space import (
    BoolVar,
    ChoiceVar,
    FloatVar,
    IntVar,
    ParameterSpace,
    Variable,
    VariableError,
    VariableValidationError,
    variable_from_dict,
    variable_to_dict,
)
from protocols.variables.store import (
    HISTORY,
    Change,
    InvalidRecordError,
    VariableConflictError,
    VariableStore,
    load_space,
    open_variables_bucket,
    parse_spec,
)
from protocols.variables.view import VariableView

__all__ = [
    "HISTORY", "VARIABLES_GROUP", "AllOf", "Approval", "BoolVar", "ByzantineApproval", "ByzantineStakeholder",
    "Change", "ChangeRejectedError", "InvalidRecordError",
    "ChangeRequest", "ChoiceVar", "ConsensusApproval", "FloatVar", "IntVar", "ParameterSpace", "Variable",
    "VariableConflictError", "VariableError", "VariableStore", "VariableValidationError", "VariableView",
    "Verdict", "change_instance", "load_space", "open_variables_bucket", "parse_spec", "stakeholder", "variable_from_dict",
    "variable_to_dict", "verify_change",
]
