"""Alerts: rules transitions → people, with escalation and acknowledgement (docs/alerts.md)."""
