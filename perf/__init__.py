"""``make bench``: measuring the kit's costs (kept out of the installed package on purpose).

- ``run.py``   the entry point (``python perf/run.py``, ``make bench``).
- ``gpu.py``   one prepared GPU benchmark (CineMA base, Med-DualLoRA on 2 blocks).
- ``timing``   repeated timings (median and spread after a warm-up), memory.
- ``costs``    parameters and exact message bytes of every strategy.
- ``measure``  the measurements themselves (strategies, prefix cache, inference,
  harmonization, notebooks), each returning plain JSON-able dicts.
- ``flower``   Flower on localhost vs the in-process loop, per-round time ratio.
- ``report``   the markdown table and the README block.

Nothing here trains or serializes in its own way: it times the kit's own functions.
"""
