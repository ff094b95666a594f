"""Matching: which route and group an alert goes to, who a step reaches, and why an
alert is not notified now (silences, inhibition).

Pure functions over the configuration and alert rows (dicts of the ``alerts`` table,
alerts/store.py); nothing here reads the database or the clock. Semantics follow
Alertmanager: the first matching route wins, ``group_by`` labels make the group,
silences match by glob, an inhibit rule's source folds its targets
(docs/alerts.md#silences-and-inhibition).
"""

from __future__ import annotations

import fnmatch
import logging
from datetime import datetime
from typing import Any

from alerts.config import AlertsConfig, Escalation, Inhibit, Route

log = logging.getLogger(__name__)

LABELS = ("rule", "category", "subject", "subject_kind", "district", "severity")


def labels(a: dict[str, Any]) -> dict[str, str]:
    """An alert's labels as routing and grouping see them (no district → "")."""
    return {k: str(a.get(k) or "") for k in LABELS}


def route_of(cfg: AlertsConfig, a: dict[str, Any]) -> int:
    """Index of the route ``a`` goes to (-1: the default route)."""
    return cfg.route_for(a["rule"], a["category"], a["severity"], a["district"] or None)


def group_key(route: Route, a: dict[str, Any]) -> str:
    """The notification group within a route: its ``group_by`` labels, e.g. ``rule=snow.depth``."""
    lab = labels(a)
    return "|".join(f"{k}={lab[k]}" for k in route.group_by)


def step_targets(
    cfg: AlertsConfig, policy: Escalation, step: int, at: datetime, gkey: str
) -> list[str]:
    """The receivers of one escalation step at ``at``; the default receiver when a
    rota resolves to nobody (logged)."""
    targets = cfg.resolve_targets(policy.steps[step].targets, at)
    if not targets:
        log.error(
            "group %s step %d resolves to nobody (empty rota?): using %s",
            gkey,
            step + 1,
            cfg.default_receiver,
        )
        targets = [cfg.default_receiver]
    return targets


def digest_targets(cfg: AlertsConfig, route: Route, at: datetime) -> list[str]:
    return cfg.resolve_targets(cfg.policy(route).steps[0].targets, at) or [cfg.default_receiver]


def delivery_failed_targets(cfg: AlertsConfig, failed: str) -> list[str]:
    """Who hears that ``failed`` could not be reached: ``delivery_failed_to``, else every
    receiver; never ``failed`` itself."""
    names = cfg.delivery_failed_to if cfg.delivery_failed_to is not None else list(cfg.receivers)
    return [r for r in names if r != failed]


# --- silences and inhibition --------------------------------------------------------


def _label(a: dict[str, Any], name: str) -> str:
    return str(a.get(name) or "")


def silence_matches(s: dict[str, Any], a: dict[str, Any]) -> bool:
    if s["rule"] and not fnmatch.fnmatchcase(a["rule"], s["rule"]):
        return False
    if s["subject"] and not fnmatch.fnmatchcase(a["subject"], s["subject"]):
        return False
    return not s["district"] or a["district"] == s["district"]


def _is_inhibit_source(rule: Inhibit, a: dict[str, Any]) -> bool:
    return any(fnmatch.fnmatchcase(a["rule"], g) for g in rule.source_rules) and (
        not rule.source_subjects or a["subject"] in rule.source_subjects
    )


def _is_inhibit_target(rule: Inhibit, a: dict[str, Any]) -> bool:
    return any(fnmatch.fnmatchcase(a["rule"], g) for g in rule.target_rules) and (
        not rule.target_subject_kinds or a["subject_kind"] in rule.target_subject_kinds
    )


def _inhibit_related(rule: Inhibit, src: dict[str, Any], tgt: dict[str, Any]) -> bool:
    """The ``equal`` labels agree and, if the rule asks, the target is about the source."""
    return all(_label(src, k) == _label(tgt, k) for k in rule.equal) and (
        rule.source_subject_is is None or src["subject"] == _label(tgt, rule.source_subject_is)
    )


def _inhibits(rule: Inhibit, src: dict[str, Any], tgt: dict[str, Any]) -> bool:
    return (
        src["key"] != tgt["key"]
        and _is_inhibit_source(rule, src)
        and _is_inhibit_target(rule, tgt)
        and _inhibit_related(rule, src, tgt)
    )


def suppression(
    cfg: AlertsConfig,
    a: dict[str, Any],
    open_alerts: list[dict[str, Any]],
    silences: list[dict[str, Any]],
    t: float,
) -> str | None:
    """Why ``a`` is not notified now (``silence #3``, ``inhibited by #7 …``), or None."""
    for s in silences:
        if s["starts_at"] <= t < s["ends_at"] and silence_matches(s, a):
            return f"silence #{s['id']}"
    for rule in cfg.inhibit:
        for src in open_alerts:
            if _inhibits(rule, src, a):
                return f"inhibited by #{src['id']} {src['key']}"
    return None
