"""The decision core: Casbin model + policy packs → decisions. No Flask, no HTTP, no ORM."""

from .engine import PolicyEngine, RuleChange, validate_request
from .packs import Pack, PackError, PackSet, load_packs
from .shapes import InvalidRuleError
from .types import ANY_TARGET, NEWCOMER, AccessRequest, Decision, Reason, ResourceFacts

__all__ = [
    "ANY_TARGET",
    "NEWCOMER",
    "AccessRequest",
    "Decision",
    "InvalidRuleError",
    "Pack",
    "PackError",
    "PackSet",
    "PolicyEngine",
    "Reason",
    "ResourceFacts",
    "RuleChange",
    "load_packs",
    "validate_request",
]
