"""The residents' plowing map (除雪状況): static files built from InfluxDB every minute.

Layer 2 (docs/architecture.md#layers): reads the rules engine's derived series through
their contract module ``rules.schema`` and raw plow positions through ``sensors.schema``;
never imports another feature. See docs/public.md.

Named ``publicpage``, not ``public``: the ``atpublic`` distribution (a dependency of
aiosmtpd) installs a top-level module ``public`` that a package of that name would shadow.
"""
