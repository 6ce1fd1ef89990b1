"""Runtime failure monitor: the taxonomy as a safeguard at run time.

A monitor decides SAFE/UNSAFE (and, with a taxonomy, which failure mode is coming)
at every `decision_every_steps` control steps from what the robot logs; an alarm
fires after `k_consecutive` UNSAFE decisions (failtax.monitor.rules). Monitors:
model monitors with the taxonomy, without it (NoContext) and as an anomaly detector
(LLM-AD) (failtax.monitor.llm), and frame classifiers, supervised or distilled from
a model monitor (failtax.monitor.cnn). `failtax monitor evaluate` scores them
(failtax.monitor.evaluate, .metrics). See docs/MONITOR.md.
"""

from __future__ import annotations

from failtax.monitor.config import MonitorConfig, load_monitor_config
from failtax.monitor.llm import Decision, LLMMonitor, Monitor, load_taxonomy
from failtax.monitor.rules import AlarmRule, first_alarm
from serving.protocol import LLMBackend


def make_monitor(cfg: MonitorConfig, backend: LLMBackend | None = None) -> Monitor:
    """The monitor `cfg` describes: `llm` needs a backend (see serving.make_backend),
    `cnn` a checkpoint (`monitor.checkpoint_path`)."""
    if cfg.kind == "cnn":
        from failtax.monitor.cnn import CNNMonitor

        return CNNMonitor(cfg)
    if cfg.kind == "llm":
        if backend is None:
            raise ValueError("an llm monitor needs a model backend (monitor.backend)")
        if cfg.variant == "taxonomy" and cfg.taxonomy_path is None:
            raise ValueError("monitor.variant=taxonomy needs monitor.taxonomy_path")
        taxonomy = load_taxonomy(cfg.taxonomy_path) if cfg.variant == "taxonomy" else None
        return LLMMonitor(cfg, backend, taxonomy)
    raise ValueError(f"unknown monitor kind {cfg.kind!r}; valid: llm, cnn")


__all__ = ["AlarmRule", "Decision", "LLMMonitor", "Monitor", "MonitorConfig", "first_alarm",
           "load_monitor_config", "load_taxonomy", "make_monitor"]
