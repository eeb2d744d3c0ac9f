"""The receiver: a minimal aiohttp server answering every POST at once with Auth0's envelope.

`python -m bench.receiver --port P [--rate 100 --burst 100]`. With `--rate` it is a receiver
that rate-limits the gateway with a token bucket: `X-RateLimit-Limit/Remaining/Reset` on every
answer (Reset: seconds until the bucket is full again), `429` with `Retry-After` when empty.
`GET /stats` answers the counts; `POST /reset` zeroes them.

For the hosted-hooks scenario: a POST to a path under `/claim` answers what a
credentials-exchange hook adding one claim answers: the body's `scope` and
`https://example.com/claim` (the body is parsed, as the hosted script's compiler parses it).

For the noisy-neighbour scenario: with `--hang S` a POST to a path under `/hang` gets no answer
for S seconds (the handler is cancelled when the caller closes the connection); with `--mark P`
the arrival of the first request whose body holds `P` and digits is kept by that number,
answered by `GET /marks`.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import re
import time
from array import array

from aiohttp import web

ANSWER = json.dumps({"status": "success", "data": {"scope": ["read", "write"]}}).encode()
STATS = web.AppKey("stats", dict)
TIMES = web.AppKey("times", array)  # arrival time (unix seconds) of every request, in order
MARKS = web.AppKey("marks", dict)  # with --mark: number in the body -> first arrival (unix seconds)
HANG_PREFIX = "/hang"
CLAIM_PREFIX = "/claim"
CLAIM = "https://example.com/claim"


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


def _claim(body: bytes) -> bytes:
    """A credentials-exchange hook's answer: the token's scope and one claim added."""
    event = json.loads(body)
    return json.dumps({"status": "success", "data": {"scope": event.get("scope") or [], CLAIM: "x"}}).encode()


def _fresh() -> dict[str, float]:
    return {"requests": 0, "ok": 0, "limited": 0, "hung": 0, "first_at": 0.0, "last_at": 0.0}


def make_app(bucket: Bucket | None, *, hang_s: float = 0.0, mark: bytes | None = None) -> web.Application:
    app = web.Application()
    app[STATS] = _fresh()
    app[TIMES] = array("d")
    app[MARKS] = {}
    marked = re.compile(re.escape(mark) + rb"(\d{1,12})") if mark else None

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        stats = request.app[STATS]
        now = time.time()
        stats["requests"] += 1
        if not stats["first_at"]:
            stats["first_at"] = now
        stats["last_at"] = now
        request.app[TIMES].append(now)
        if marked is not None and (m := marked.search(body)) is not None:
            request.app[MARKS].setdefault(int(m.group(1)), now)
        if hang_s > 0 and request.path.startswith(HANG_PREFIX):
            stats["hung"] += 1
            await asyncio.sleep(hang_s)  # cancelled when the caller gives up and closes
        if bucket is None:
            stats["ok"] += 1
            if request.path.startswith(CLAIM_PREFIX):
                return web.Response(body=_claim(body), content_type="application/json")
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
        request.app[MARKS] = {}
        return web.json_response({"ok": True})

    async def marks(request: web.Request) -> web.Response:
        return web.json_response({str(k): v for k, v in request.app[MARKS].items()})

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
    app.router.add_get("/marks", marks)
    app.router.add_post("/{tail:.*}", hook)
    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=0.0, help="requests a second (0: unlimited)")
    p.add_argument("--burst", type=int, default=100)
    p.add_argument("--hang", type=float, default=0.0,
                   help=f"seconds a POST under {HANG_PREFIX} waits unanswered")
    p.add_argument("--mark", default="", help="keep the arrival of bodies holding this prefix and digits")
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    bucket = Bucket(args.rate, args.burst) if args.rate > 0 else None
    app = make_app(bucket, hang_s=args.hang, mark=args.mark.encode() or None)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None,
                handle_signals=True, shutdown_timeout=1.0, handler_cancellation=args.hang > 0)


if __name__ == "__main__":
    main()
