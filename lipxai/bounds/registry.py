"""The rule registry of :mod:`lipxai.bounds`: one dict from primitive name to rule for the
interval interpreter, one for the linear bounds of the symbolic interpreter, one for the
lane-wise operations on packed intervals.

The rule modules (``rules``, ``control``, ``packed``, ``symbolic``) register into it when
``lipxai.bounds`` imports them; this module imports none of them, so the interpreters and the
rules depend on it and not on each other.  The style follows jax_verify/autobound: a dict
from primitive name to rule, and an unknown primitive fails loudly, by name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

#: Rules by primitive name: ``rule(*invals, **params) -> outval`` (a list for primitives with
#: multiple results).  ``invals`` are Intervals or points; at least one is an Interval.
RULES: dict[str, Callable] = {}


class UnsupportedPrimitiveError(NotImplementedError):
    """No interval rule is registered for a primitive that receives an Interval input."""


def register_rule(name: str, rule: Callable | None = None):
    """Register ``rule`` for the primitive called ``name`` (usable as a decorator).

    A rule receives the equation's inputs (Intervals or plain arrays, at least one Interval)
    and its params as keyword arguments, and returns Intervals or arrays shaped like the
    primitive's outputs (a list when the primitive has multiple results).  It must be sound:
    every output of the primitive on inputs inside the input intervals lies in the result.
    """
    if rule is None:
        return functools.partial(register_rule, name)
    RULES[name] = rule
    return rule


#: Linear-bound rules by primitive name: ``rule(invals, lins, out_aval, **params) -> Linear or
#: None`` (None: the output carries an interval only).  ``lins[i]`` is the Linear of input i
#: or None.  ``TIGHTENS`` names the rules whose concretisation can be tighter than the
#: interval rule (the others: the interval rule is already exact given the input intervals).
SYMBOLIC_RULES: dict[str, Callable] = {}
TIGHTENS: set[str] = set()


def register_symbolic_rule(name: str, *, tightens: bool = False):
    """Register a linear-bound rule for the primitive called ``name`` (a decorator)."""

    def register(rule):
        SYMBOLIC_RULES[name] = rule
        if tightens:
            TIGHTENS.add(name)
        return rule

    return register


#: Lane-wise rules on packed intervals (:mod:`lipxai.bounds.packed`) by primitive name:
#: ``rule(eqn, invals) -> PackedInterval | None``.
PACKED_RULES: dict[str, Callable] = {}


def register_packed_rule(*names):
    """Register a lane-wise rule for the primitives called ``names`` (a decorator)."""

    def register(rule):
        for name in names:
            PACKED_RULES[name] = rule
        return rule

    return register
