"""Many read-only commands in one remote command: one round trip instead of one each.

The batch is a fixed POSIX sh script; the commands travel as its positional arguments (each argv preceded by
its length), so nothing is quoted here: the transport quotes the whole argv once, as for any command. The
script runs each command with an empty stdin and frames its output with a random boundary, on stdout and on
stderr, followed by its exit status. The boundary comes on the script's stdin, not its command line, so other
users of the host cannot read it in `ps` and plant it in a file a later command prints::

    batch = Batch.of([Command("cat", "/etc/os-release"), Command("hostname")])
    result = host.execute(batch.command, sudo=False)
    first, second = batch.split(result)        # a RunResult each (None for any the batch did not reach)

A command whose own output contained the boundary would confuse the framing; it is 128 random bits, chosen
per batch and never on a command line, so that needs a guess, not a file with unlucky contents.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from vmlab.engine.command import Command, RunResult

# For each command: "B:" on both streams, its output, then "B=STATUS;" on stdout. The subshell keeps the
# first N arguments (a `for` list is fixed when the loop starts, so resetting "$@" inside it is safe).
SCRIPT = """IFS= read -r b || exit 125
while [ $# -gt 0 ]; do
  n=$1; shift
  printf '%s:' "$b"; printf '%s:' "$b" >&2
  (k=0
   for a do
     if [ "$k" -eq 0 ]; then set --; fi
     set -- "$@" "$a"; k=$((k + 1))
     if [ "$k" -ge "$n" ]; then break; fi
   done
   exec "$@") </dev/null
  printf '%s=%s;' "$b" "$?"
  shift "$n"
done
"""

# sshd hands the command line to the login shell as one argument, and Linux caps one argument at 128 KiB.
MAX_LINE = 64 << 10


def batchable(command: Command) -> bool:
    """Whether `command` can run inside a batch: it reads no stdin and fits a command line on its own."""
    return command.stdin is None and len(shlex.join(command.argv)) < MAX_LINE // 2


def plan_batches(commands: Sequence[Command], limit: int = MAX_LINE) -> list[list[int]]:
    """Indexes of `commands` grouped into batches whose command lines stay under `limit` characters."""
    groups: list[list[int]] = []
    size = limit
    for i, command in enumerate(commands):
        cost = len(shlex.join(command.argv)) + 8
        if size + cost > limit:
            groups.append([])
            size = len(SCRIPT) + 64
        groups[-1].append(i)
        size += cost
    return groups


@dataclass(frozen=True)
class Batch:
    """One batch command and how to cut its output back into the results of the commands in it."""

    command: Command
    boundary: str
    size: int

    @classmethod
    def of(cls, commands: Sequence[Command]) -> Batch:
        boundary = os.urandom(16).hex()
        argv: list[str] = []
        for c in commands:
            argv += [str(len(c.argv)), *c.argv]
        command = Command("sh", "-c", SCRIPT, "sh", *argv, stdin=boundary + "\n", ok_codes=tuple(range(256)),
                          label=f"read {len(commands)} facts")
        return cls(command, boundary, len(commands))

    def split(self, result: RunResult) -> list[RunResult | None]:
        """The result of each command, in order; None for commands the batch did not finish (killed, cut)."""
        out: list[RunResult | None] = [None] * self.size
        outs = result.stdout.split(self.boundary)[1:]
        errs = result.stderr.split(self.boundary)[1:]
        # outs alternates ":stdout" and "=status;" pieces; errs holds ":stderr" pieces
        for i in range(min(self.size, len(outs) // 2, len(errs))):
            body, tail = outs[2 * i], outs[2 * i + 1]
            if not (body.startswith(":") and tail.startswith("=") and tail.endswith(";")):
                break
            status = tail[1:-1]
            if not status.isdigit():
                break
            out[i] = RunResult(int(status), body[1:], errs[i][1:])
        return out

