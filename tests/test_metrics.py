"""`/metrics`: Prometheus text for operators, from loopback (or `metrics_allowed_cidrs`)."""

from __future__ import annotations

EVENT = {"user": {"id": "u1"}, "context": {"connection": {"id": "con_1", "name": "db"}}}
CE = {"audience": "https://api.example.com", "client": {"id": "c1", "name": "App"}, "scope": ["read"]}


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # exposition sorts labels
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}}") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{want}}} not in metrics")


async def test_metrics_count_events_attempts_and_invocations(gateway, make_receiver) -> None:
    rx = await make_receiver()
    await gateway.create_hook(url=rx.url(), enabled=True)
    await gateway.create_hook(name="ce", triggerId="credentials-exchange", url=rx.url(), enabled=True)
    sent = await (await gateway.forward("post-user-registration", EVENT)).json()
    await gateway.wait_delivery(sent["deliveries"][0]["deliveryId"], status="succeeded")
    resp = await gateway.forward("credentials-exchange", CE)
    assert resp.status == 200
    resp = await gateway.client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    assert sample(text, "gateway_events_total", trigger="post-user-registration") == 1
    assert sample(text, "gateway_delivery_attempts_total", outcome="succeeded") == 1
    assert (
        sample(text, "gateway_sync_invocations_total", trigger="credentials-exchange", result="success") == 1
    )
    assert sample(text, "gateway_delivery_backlog") == 0
    # Both calls went to the same receiver: one connection, kept alive between them.
    assert sample(text, "gateway_outbound_connections_total", scheme="http") == 1
    assert sample(text, "gateway_outbound_idle_connections") == 1
    assert sample(text, "gateway_outbound_closed_reused_total") == 0


async def test_metrics_are_refused_outside_their_allowlist(make_gateway, make_settings) -> None:
    gw = await make_gateway(make_settings(server={"metrics_allowed_cidrs": ["192.0.2.0/24"]}))
    resp = await gw.client.get("/metrics")
    assert resp.status == 403
    assert (await resp.json())["statusCode"] == 403
