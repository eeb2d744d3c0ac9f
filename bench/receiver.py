"""The receiver: a minimal aiohttp server answering every POST at once with Auth0's envelope.

`python -m bench.receiver --port P [--rate 100 --burst 100]`. With `--rate` it is a receiver
that rate-limits the gateway with a token bucket: `X-RateLimit-Limit/Remaining/Reset` on every
answer (Reset: seconds until the bucket is full again), `429` with `Retry-After` when empty.
`GET /stats` answers the counts; `POST /reset` zeroes them.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import time
from array import array

from aiohttp import web

ANSWER = json.dumps({"status": "success", "data": {"scope": ["read", "write"]}}).encode()
STATS = web.AppKey("stats", dict)
TIMES = web.AppKey("times", array)  # arrival time (unix seconds) of every request, in order


class Bucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def take(self) -> tuple[bool, int, float]:
        """(allowed, remaining, seconds until full)."""
        now = time.monotonic()
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        allowed = self.tokens >= 1.0
        if allowed:
            self.tokens -= 1.0
        return allowed, int(self.tokens), (self.burst - self.tokens) / self.rate

    def wait_s(self) -> float:
        return max(0.0, (1.0 - self.tokens) / self.rate)


def _fresh() -> dict[str, float]:
    return {"requests": 0, "ok": 0, "limited": 0, "first_at": 0.0, "last_at": 0.0}


def make_app(bucket: Bucket | None) -> web.Application:
    app = web.Application()
    app[STATS] = _fresh()
    app[TIMES] = array("d")

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        stats = request.app[STATS]
        now = time.time()
        stats["requests"] += 1
        if not stats["first_at"]:
            stats["first_at"] = now
        stats["last_at"] = now
        request.app[TIMES].append(now)
        if bucket is None:
            stats["ok"] += 1
            return web.Response(body=ANSWER, content_type="application/json")
        allowed, remaining, reset_s = bucket.take()
        headers = {
            "X-RateLimit-Limit": str(bucket.burst),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{reset_s:.3f}",
        }
        if not allowed:
            stats["limited"] += 1
            headers["Retry-After"] = str(max(1, math.ceil(bucket.wait_s())))
            return web.Response(status=429, body=b'{"error":"rate limited"}', content_type="application/json",
                                headers=headers)
        stats["ok"] += 1
        return web.Response(body=ANSWER, content_type="application/json", headers=headers)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(request.app[STATS])

    async def reset(request: web.Request) -> web.Response:
        request.app[STATS] = _fresh()
        request.app[TIMES] = array("d")
        return web.json_response({"ok": True})

    async def times(request: web.Request) -> web.Response:
        """`?i=N...`: arrival time of the N-th request (1-based, null if not yet);
        `?since=T&until=T`: how many arrived in [since, until)."""
        arrivals = request.app[TIMES]
        out: dict[str, object] = {}
        for i in request.query.getall("i", []):
            n = int(i)
            out[i] = arrivals[n - 1] if 0 < n <= len(arrivals) else None
        if "since" in request.query and "until" in request.query:
            lo = bisect.bisect_left(arrivals, float(request.query["since"]))
            hi = bisect.bisect_left(arrivals, float(request.query["until"]))
            out["count"] = hi - lo
        return web.json_response(out)

    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_get("/times", times)
    app.router.add_post("/{tail:.*}", hook)
    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=0.0, help="requests a second (0: unlimited)")
    p.add_argument("--burst", type=int, default=100)
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    bucket = Bucket(args.rate, args.burst) if args.rate > 0 else None
    web.run_app(make_app(bucket), host="127.0.0.1", port=args.port, access_log=None, print=None,
                handle_signals=True, shutdown_timeout=1.0)


if __name__ == "__main__":
    main()
