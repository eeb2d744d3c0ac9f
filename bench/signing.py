"""`python -m bench.signing`: what signing one request costs, v1 (HMAC-SHA256) against v1a
(Ed25519), for one key and for two (a rotation's grace), at two body sizes.

The figure is CPU time of `Signer.header_lines` (what the delivery hot path calls), the best of
several rounds so that a shared machine's noise does not count; it prints, it asserts nothing.
"""

from __future__ import annotations

import os
import time

from gateway.signing import Signer, new_signing_key

ROUNDS = 5  # best of
CALLS = 2000  # per round
BODIES = {"1 KiB": os.urandom(512).hex().encode(), "16 KiB": os.urandom(8192).hex().encode()}


def per_call_us(signer: Signer, body: bytes) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.process_time()
        for i in range(CALLS):
            signer.header_lines("dl_0190f3a9c2d47e0b8f6a1c3e5d7b9a10", 1_700_000_000 + i, body)
        best = min(best, time.process_time() - start)
    return best / CALLS * 1e6


def main() -> None:
    v1, v1_old = new_signing_key("v1"), new_signing_key("v1")
    v1a, v1a_old = new_signing_key("v1a"), new_signing_key("v1a")
    signers = {
        "v1, one secret": Signer([v1]),
        "v1, two (rotation)": Signer([v1, v1_old]),
        "v1a, one key": Signer([v1a]),
        "v1a, two (rotation)": Signer([v1a, v1a_old]),
        "v1a + v1 (switch)": Signer([v1a, v1]),
    }
    print(f"{'signer':<22}" + "".join(f"{name:>20}" for name in BODIES))
    baseline = {name: per_call_us(signers["v1, one secret"], body) for name, body in BODIES.items()}
    for label, signer in signers.items():
        cells = []
        for name, body in BODIES.items():
            us = per_call_us(signer, body)
            cells.append(f"{us:.1f} µs (x{us / baseline[name]:.1f})")
        print(f"{label:<22}" + "".join(f"{c:>20}" for c in cells))


if __name__ == "__main__":
    main()
