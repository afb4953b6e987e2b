"""Evaluate an IAM identity policy for one request, as AWS documents it, for the parts vmlab's policies use.

moto stores IAM policies but evaluates neither `Resource` patterns against S3 requests nor conditions such as
`s3:prefix`, so a policy's reach is checked here: explicit Deny wins, then any Allow, else implicit deny;
`Action`/`Resource` and `StringLike` values match with `*` (any run of characters, `/` included) and `?` (one
character), case-sensitively; a condition key the request lacks fails the condition. Any operator or element this
does not model raises instead of being ignored, so a policy can never look narrower than it is.

Example::

    allowed(policy, "s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "alice/"})   # True / False
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_MODELLED = {"Sid", "Effect", "Action", "Resource", "Condition"}


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _like(pattern: str, value: str, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def _condition_holds(condition: Mapping[str, Any], context: Mapping[str, str]) -> bool:
    for operator, tests in condition.items():
        if operator not in ("StringLike", "StringEquals"):
            raise NotImplementedError(f"condition operator {operator} is not modelled")
        for key, wanted in tests.items():
            if key not in context:
                return False
            value = context[key]
            if operator == "StringEquals":
                ok = value in _as_list(wanted)
            else:
                ok = any(_like(w, value) for w in _as_list(wanted))
            if not ok:
                return False
    return True


def _applies(statement: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str]) -> bool:
    unknown = set(statement) - _MODELLED
    if unknown:
        raise NotImplementedError(f"policy elements {sorted(unknown)} are not modelled")
    return (any(_like(a, action, ignore_case=True) for a in _as_list(statement["Action"]))
            and any(_like(r, resource) for r in _as_list(statement["Resource"]))
            and _condition_holds(statement.get("Condition", {}), context))


def allowed(policy: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str] | None = None) -> bool:
    """Whether `policy` allows `action` on `resource` for a request with these condition keys."""
    context = context or {}
    applying = [s for s in policy["Statement"] if _applies(s, action, resource, context)]
    if any(s["Effect"] == "Deny" for s in applying):
        return False
    return any(s["Effect"] == "Allow" for s in applying)
