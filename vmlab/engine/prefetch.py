"""Read the facts of the coming steps in a few batched commands instead of one command per fact.

Which facts a step needs is found by planning it against what is cached: a probe `Facts` answers from the
cache and notes every fact it does not have. All coming steps are probed, their missing facts read in one batch,
and the probe repeated until nothing is missing (a fact that depends on another fact's value costs one more
round). So a no-op re-apply reads its facts in a round or two, whatever the number of steps.

This is optimistic, never stale: probing stops after the first step that would change the host (its later
facts may be different once it ran), the runner clears the cache after every step that changed something and
probes again from the next step, and every step is planned for real, from the cache, just before it runs. A
fact the probe missed is simply read when the step asks for it. Example::

    covered = prefetch(cache, [(probe_step_1, False), (probe_step_2, True)], stop_at_change=True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from vmlab.engine.facts import Fact, FactCache, Facts

T = TypeVar("T")

# Rounds of probing per prefetch: each is one batch; facts chained deeper than this are read one by one.
MAX_ROUNDS = 4

# A unit of work to probe: called with a probe Facts; returns whether it would change the host.
Probe = Callable[[Facts], bool]


class Missing(Exception):
    """Raised inside a probed plan at the first fact the cache does not hold."""


class ProbeFacts(Facts):
    """Facts that answer only from the cache and record what they could not answer."""

    def __init__(self, cache: FactCache, sudo: bool) -> None:
        super().__init__(cache, sudo)
        self.missing: list[tuple[Fact, bool]] = []

    def get(self, fact: Fact[T]) -> T:
        if not self._cache.has(fact, self.sudo):
            self.missing.append((fact, self.sudo))
            raise Missing(type(fact).__name__)
        return self._cache.get(fact, self.sudo)


def probe_round(cache: FactCache, units: Sequence[tuple[Probe, bool]],
                stop_at_change: bool) -> tuple[list[tuple[Fact, bool]], int]:
    """Probe `units` (probe, sudo) in order: (the facts they asked for that are not cached, units covered).

    A unit that hit a missing fact may or may not change the host; the later ones are probed anyway (the
    optimistic part): if it does change it, their facts are thrown away and read again.
    """
    missing: list[tuple[Fact, bool]] = []
    covered = 0
    for probe, sudo in units:
        facts = ProbeFacts(cache, sudo)
        covered += 1
        try:
            changes = probe(facts)
        except Missing:
            changes = False
        except Exception:  # the step will fail when it runs for real, and the run stops there
            missing += facts.missing
            break
        missing += facts.missing
        if changes and stop_at_change:
            break
    return missing, covered


def prefetch(cache: FactCache, units: Sequence[tuple[Probe, bool]], *, stop_at_change: bool) -> int:
    """Batch-read the facts `units` will ask for; returns how many units the cache now covers (after that many
    units, or after a unit that changed the host, prefetch again)."""
    covered = 0
    for _ in range(MAX_ROUNDS):
        missing, covered = probe_round(cache, units, stop_at_change)
        try:
            if not missing or not cache.load(missing):
                break
        except Exception:  # sudo refused, connection lost...: the step reads for itself and reports it
            break
    return max(covered, 1)
