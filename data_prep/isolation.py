"""Run each task in its own child process, so that one that dies costs only itself.

``concurrent.futures.ProcessPoolExecutor`` turns one dead worker (killed for memory, a crash in
native code) into ``BrokenProcessPool`` for every task still queued: the whole harmonize run
ended with no CSVs and no subject named. Here each task gets a fresh forked process (cheap:
the parent has already imported what the children need), its result comes back through a pipe,
and a child that exits without sending one is reported as ``Died`` for exactly that task.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any


@dataclass(frozen=True)
class Died:
    """A task whose process ended without a result; ``exitcode`` < 0 is the killing signal."""

    exitcode: int | None

    def describe(self) -> str:
        code = self.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            hint = " (SIGKILL: often the out-of-memory killer)" if -code == signal.SIGKILL else ""
            return f"the worker process was killed by {name}{hint}"
        return f"the worker process exited with code {code} before returning a result"


def _child(send: Connection, task: Callable[..., Any], args: tuple,
           initializer: Callable[[], None] | None) -> None:
    if initializer is not None:
        initializer()
    send.send(task(*args))
    send.close()


def run_isolated(task: Callable[..., Any], argument_lists: Sequence[tuple], workers: int,
                 initializer: Callable[[], None] | None = None
                 ) -> Iterator[tuple[int, Any | Died]]:
    """``(index, task(*argument_lists[index]) or Died)`` as each finishes, ``workers`` at a
    time. ``task`` should return (not raise) its failures; an exception raised in the child
    ends it without a result and is reported as ``Died`` too."""
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    context = mp.get_context(method)
    pending = deque(enumerate(argument_lists))
    running: dict[Connection, tuple[int, Any]] = {}
    try:
        while pending or running:
            while pending and len(running) < max(1, workers):
                index, args = pending.popleft()
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=_child, args=(send, task, args, initializer),
                                          daemon=True)
                process.start()
                send.close()  # the child holds the only writer: EOF when it ends
                running[receive] = (index, process)
            for receive in wait(list(running)):
                index, process = running.pop(receive)
                try:
                    result: Any = receive.recv()
                except (EOFError, OSError):
                    process.join()
                    result = Died(process.exitcode)
                receive.close()
                process.join()
                yield index, result
    finally:  # an interrupted run leaves no children behind
        for _, process in running.values():
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
            process.join()
