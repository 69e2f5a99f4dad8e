"""Attribute conditions of pack rules: CEL expressions over the request's properties.

A pack declares its conditions by id (``conditions:`` in ``policy/<pack>.yaml``); a p-rule carries
one as its scope, ``when:<id>`` (six values still: the adapter's table is unchanged). model.conf
asks the custom matcher function ``when(p.scope, r.obj)``, which evaluates the compiled expression
over four maps — ``subject``, ``resource``, ``action`` and ``context`` — that the decision surfaces
put into the request (:class:`Props`, ``ResourceFacts.props``). Expressions are compiled once per
policy load (``common-expression-language``, the Rust CEL interpreter: ~17–30 µs an evaluation,
measured; ``cel-python``, pure Python, was slower). Evaluation fails closed: a missing property,
a type error or any other exception is ``false``, and a result that is not the boolean ``true``
is ``false``. Rules without a condition never call the expression (the memo planner folds
``when(<scope>, …)`` to ``false`` for every scope that is not ``when:…``), so stock Casbin and the
engine answer them as before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cel

PREFIX = "when:"
VARIABLES = ("subject", "resource", "action", "context")
_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class ConditionError(ValueError):
    """A condition that cannot be compiled (syntax, unknown variable, bad id)."""


class Props:
    """The properties a condition reads: four JSON-like maps, compared and hashed by content."""

    __slots__ = ("activation", "key")

    def __init__(
        self,
        subject: Mapping[str, Any] | None = None,
        resource: Mapping[str, Any] | None = None,
        action: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        self.activation: dict[str, dict[str, Any]] = {
            "subject": dict(subject or {}),
            "resource": dict(resource or {}),
            "action": dict(action or {}),
            "context": dict(context or {}),
        }
        self.key = json.dumps(self.activation, sort_keys=True, separators=(",", ":"), default=str)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Props) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __bool__(self) -> bool:
        return any(self.activation.values())

    def __repr__(self) -> str:
        return f"Props({self.key})"


NO_PROPS = Props()


RESULTS_LIMIT = 50_000  # remembered (condition, properties) answers per condition; cleared when full


@dataclass(frozen=True)
class Condition:
    """One compiled condition: its id, CEL source and description.

    An expression is a pure function of the four maps (CEL has no clock or I/O here), so answers are
    remembered by the properties' canonical text: a repeated request costs a dict lookup instead of an
    evaluation (~17-30 µs measured with common-expression-language 0.10). A bounded dict, cleared when
    full, as the decision memo does — no eviction order to keep on the decision path.
    """

    id: str
    source: str
    description: str
    program: Any
    results: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def holds(self, props: Props) -> bool:
        """True only if the expression evaluates to the boolean true (errors are false)."""
        hit = self.results.get(props.key)
        if hit is not None:
            return hit
        try:
            answer = self.program.execute(props.activation) is True
        except Exception:  # noqa: BLE001 - fail closed: a missing property or a type error denies
            answer = False
        if len(self.results) >= RESULTS_LIMIT:
            self.results.clear()
        self.results[props.key] = answer
        return answer


def compile_condition(cid: str, source: str, description: str = "") -> Condition:
    """Compile one condition; ConditionError names what is wrong."""
    if not _ID.match(cid):
        raise ConditionError(f"condition id {cid!r} must be snake_case")
    if not isinstance(source, str) or not source.strip():
        raise ConditionError(f"condition {cid}: 'when' must be a CEL expression")
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConditionError(f"condition {cid}: {first}") from None
    unknown = sorted(set(program.variables()) - set(VARIABLES))
    if unknown:
        raise ConditionError(f"condition {cid}: unknown variable(s) {', '.join(unknown)}; use {', '.join(VARIABLES)}")
    return Condition(cid, source, description, program)


# The escalation verifier decides each condition both ways: its probe packs carry flag conditions
# that hold exactly when the request's context lists their id under this key.
VERIFY_KEY = "$verify_holds"


class _Flag:
    """A stand-in program: true iff the activation's context lists the condition's id under VERIFY_KEY."""

    def __init__(self, cid: str) -> None:
        self.cid = cid

    def execute(self, activation: Mapping[str, Any]) -> bool:
        return self.cid in activation["context"].get(VERIFY_KEY, ())

    def variables(self) -> list[str]:
        return ["context"]


def flagged(cond: Condition) -> Condition:
    """The condition as the verifier probes it: held or not at the verifier's choice."""
    return Condition(cond.id, cond.source, cond.description, _Flag(cond.id))


def when_function(conditions: Mapping[str, Condition]) -> Any:
    """The matcher function ``when(scope, obj)``: the condition ``scope`` names holds for obj's props.

    Its ``fold`` attribute answers for a constant scope without a request (the memo planner's hook):
    ``False`` for a scope that is not ``when:…``, None (ask per request) otherwise — a function of
    the scope text alone, so plans cached across policy loads stay right.
    """

    def when(scope: object, obj: object) -> bool:
        if type(scope) is not str or not scope.startswith(PREFIX):
            return False
        cond = conditions.get(scope[len(PREFIX) :])
        if cond is None:
            return False
        props = getattr(obj, "props", NO_PROPS)
        return isinstance(props, Props) and cond.holds(props)

    def fold(scope: object) -> bool | None:
        return None if type(scope) is str and scope.startswith(PREFIX) else False

    when.fold = fold  # type: ignore[attr-defined]
    return when
