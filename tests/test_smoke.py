from __future__ import annotations


async def test_create_hook_and_deliver(gateway, make_receiver) -> None:
    rx = await make_receiver()
    hook = await gateway.create_hook(url=rx.url(), enabled=True)
    resp = await gateway.forward(
        "post-user-registration",
        {"user": {"id": "u1"}, "context": {"connection": {"id": "con_1", "name": "db"}}},
    )
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["deliveries"][0]["hookId"] == hook["id"]
    await rx.wait_for(1)
    d = await gateway.wait_delivery(body["deliveries"][0]["deliveryId"], status="succeeded")
    assert d["attempts"][0]["statusCode"] == 200
