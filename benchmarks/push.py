"""How fast ``public run`` sends Web Push notices, and what a subscription costs the
server.

    python -m benchmarks.push [--subscriptions N]

N subscriptions are posted to ``public serve``'s endpoint (rate limit lifted), then one
send round notifies all of them: each notice is encrypted (RFC 8291), VAPID-signed and
posted to a local receiver (tests/push_support.py) that verifies and decrypts it, as a
push service and browser would. Printed: subscriptions a second through the endpoint,
notices a second in the round, and as a baseline from the same run, the encryption
and signing alone (pywebpush without the POST). The receiver's decryption runs on the
same cores, so the figures are pessimistic; on a shared machine more so.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from py_vapid import Vapid02
from pywebpush import WebPusher

from publicpage.config import PushConfig
from publicpage.push import PushStore
from publicpage.pushsend import Sender, application_server_key, send_round
from publicpage.pushserve import PushEndpoint
from publicpage.serve import Server
from tests.push_support import post_json, receiving


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscriptions", type=int, default=500)
    args = ap.parse_args(argv)
    n = args.subscriptions
    with tempfile.TemporaryDirectory(prefix="yukimizu-push-bench-") as tmp, receiving() as rx:
        root = Path(tmp)
        (root / "index.html").write_text("x")
        vapid = Vapid02()
        vapid.generate_keys()
        vapid.save_key(str(root / "vapid.pem"))
        pcfg = PushConfig(
            vapid_key_file=root / "vapid.pem",
            subject="mailto:bench@town.example.jp",
            store=root / "push.sqlite",
            services=("127.0.0.1",),
            subscribe_per_min=100_000,
            max_subscriptions=n,
        )
        store = PushStore(pcfg.store)
        now = [1_769_450_000_000]
        endpoint = PushEndpoint(pcfg, store, application_server_key(vapid), clock_ms=lambda: now[0])
        server = Server(root, "127.0.0.1", 0, push=endpoint)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        subs: list[dict[str, Any]] = [rx.browser(f"b{i}")[1] for i in range(n)]
        t0 = time.perf_counter()
        for sub in subs:
            body = json.dumps({**sub, "segments": ["R001", "R002"]}).encode()
            status, _h, _b = post_json(server.server_port, "/push/subscribe", body)
            assert status == 201, status
        sub_s = time.perf_counter() - t0
        segments: list[dict[str, Any]] = [
            {"id": "R001", "name": "本町通り", "last_plowed": "2026-01-27T08:00:00+09:00"},
            {"id": "R002", "name": "駅前通り", "last_plowed": None},
        ]
        sender = Sender(vapid, pcfg)
        t0 = time.perf_counter()
        counts = send_round(store, segments, now[0] + 10 * 3_600_000, sender, pcfg)
        send_s = time.perf_counter() - t0
        assert counts["sent"] == n and not rx.errors, (counts, rx.errors[:3])
        # baseline: encrypt + sign only, no POST
        t0 = time.perf_counter()
        for sub in subs[: min(n, 200)]:
            WebPusher(sub).encode(b'{"title":"x","body":"' + b"y" * 60 + b'"}', "aes128gcm")
            vapid.sign({"sub": pcfg.subject, "aud": rx.origin, "exp": int(time.time()) + 3600})
        enc_s = (time.perf_counter() - t0) / min(n, 200)
        server.shutdown()
        server.server_close()
        thread.join(5)
        store.close()
        sender.close()
    print(
        f"subscribe: {n / sub_s:,.0f} subscriptions/s through public serve ({n} in {sub_s:.2f} s)"
    )
    print(f"baseline: encrypt + sign one notice {enc_s * 1000:.2f} ms")
    print(f"push: {n / send_s:,.0f} notices/s in one round ({n} in {send_s:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
