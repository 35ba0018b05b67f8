"""Monitoring: Prometheus metrics (``metrics``), per-request log context (``log_context``), a cheap
language guess for breaking figures down (``language``) and the one percentile the project reports
(``percentile``). It imports nothing else from ``core``, so every subsystem may use it."""

from core.monitoring.language import guess_language
from core.monitoring.percentile import percentile

__all__ = ["guess_language", "percentile"]
