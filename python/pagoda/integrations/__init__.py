"""Adapters of Pagoda for inference engines, each pinned to an engine
version and documented in ``docs/integrations.md``:

- ``pagoda.integrations.lmcache``: an LMCache (0.5.6) remote storage plugin;
- ``pagoda.integrations.vllm``: a secondary tier of vLLM's (0.33.0)
  offloading connector;
- ``pagoda.integrations.sglang``: an SGLang (0.5.23) HiCache L3 backend.

Each imports its engine: import only the one you use.

Each adapter keys blocks by the engine's own keys through an external key
scheme (``pagoda.keys``), never blocks the engine's scheduler on a dead node
(``Breaker``), and reports a failed or late load as a miss, so the engine
recomputes.
"""

from ._breaker import Breaker

__all__ = ["Breaker"]
