"""The residents' plowing map (除雪状況): static files built from InfluxDB every minute.

Layer 2 (docs/architecture.md#layers): reads the rules engine's derived series through
their contract module ``rules.schema`` and raw plow positions through ``sensors.schema``;
never imports another feature. See docs/public.md.

Name clash: the ``atpublic`` distribution (a dependency of aiosmtpd, which the alerts
tests use) is also a top-level ``public`` module, and ours shadows it from the checkout.
aiosmtpd only does ``from public import public`` and decorates with it, so this module
offers the same decorator (atpublic's semantics: add the name to the defining module's
``__all__``). Renaming this package would end the clash (docs/public.md#package-name).
"""

from __future__ import annotations

import sys
from typing import TypeVar

T = TypeVar("T")


def public(thing: T) -> T:
    """atpublic's ``@public``: list the decorated object in its module's ``__all__``."""
    module = sys.modules[thing.__module__]
    names = module.__dict__.setdefault("__all__", [])
    name = getattr(thing, "__name__")  # noqa: B009 (typed as any object with a name)
    if name not in names:
        names.append(name)
    return thing


def private(thing: T) -> T:
    """atpublic's ``@private``: keep the decorated object out of ``__all__``."""
    module = sys.modules[thing.__module__]
    names = module.__dict__.get("__all__", [])
    name = getattr(thing, "__name__")  # noqa: B009
    if name in names:
        names.remove(name)
    return thing
