"""Measuring the kit's costs (``benchmarks/run.py`` and ``benchmarks/gpu.py`` call these).

- ``duallora.bench.timing``  repeated timings (median and spread after a warm-up), memory.
- ``duallora.bench.costs``   parameters and exact message bytes of every strategy.
- ``duallora.bench.measure`` the measurements themselves (strategies, prefix cache, inference,
  harmonization, notebooks, Flower), each returning plain JSON-able dicts.
- ``duallora.bench.report``  the markdown table and the README block.

Nothing here trains or serializes in its own way: it times the kit's own functions.
"""
