"""The gateway's end of a hosted hook's channel (gateway/runtime/wire.py), against raw bytes written
on the other end of a real socket pair: frames however the bytes are cut, and each way a process
can break the protocol; and a call's frame, built without json.dumps of the whole message, is the
JSON of that message."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.runtime import wire

MAX_BYTES = 1024
MAX_POLLS = 500  # turns of the event loop waiting for the channel, at most


@given(call_id=st.integers(min_value=0, max_value=2**53), body=st.text(),
       secrets=st.dictionaries(st.text(), st.text(), max_size=5))
def test_a_calls_frame_is_the_json_of_its_message(call_id: int, body: str, secrets: dict[str, str]) -> None:
    message = {"id": call_id, "body": body, "secrets": secrets}
    try:
        expected = wire.encode(message)
    except UnicodeEncodeError:  # lone surrogates: no frame either way
        with pytest.raises(UnicodeEncodeError):
            wire.encode_call(call_id, body, wire.encode_secrets(secrets))
        return
    frame = wire.encode_call(call_id, body, wire.encode_secrets(secrets))
    assert frame == expected
    assert json.loads(frame[4:]) == message


def frame(message: Any) -> bytes:
    data = json.dumps(message).encode()
    return len(data).to_bytes(4, "big") + data


@dataclass
class Ends:
    channel: wire.Channel
    peer: socket.socket  # the process's end, written raw
    messages: list[dict[str, Any]] = field(default_factory=list)
    ended: list[str | None] = field(default_factory=list)

    def bind(self) -> None:
        self.channel.bind(self.messages.append, self.ended.append)

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.peer, data)

    async def until(self, messages: int = 0, ended: bool = False) -> None:
        for _ in range(MAX_POLLS):
            if len(self.messages) >= messages and (not ended or self.ended):
                return
            await asyncio.sleep(0.002)


@pytest.fixture
async def ends() -> AsyncIterator[Ends]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.setblocking(False)
    channel = wire.Channel(MAX_BYTES)
    await asyncio.get_running_loop().create_unix_connection(lambda: channel, sock=ours)
    pair = Ends(channel, theirs)
    try:
        yield pair
    finally:
        channel.abort()
        theirs.close()


async def test_frames_arrive_whole_however_the_bytes_are_cut(ends: Ends) -> None:
    ends.bind()
    sent = [{"ready": True}, {"id": 1, "status": 200, "body": "é" * 40}, {"id": 2, "status": 500, "body": ""}]
    data = b"".join(frame(m) for m in sent)
    for i in range(len(data)):  # one byte at a time
        await ends.send(data[i:i + 1])
        await asyncio.sleep(0)
    await ends.until(messages=3)
    assert ends.messages == sent
    await ends.send(data + data[:7])  # all three again at once, and a piece of the next
    await ends.until(messages=6)
    await ends.send(data[7:])
    await ends.until(messages=9)
    assert ends.messages == sent * 3
    assert ends.ended == []


async def test_a_message_before_the_process_is_bound_is_kept_for_it(ends: Ends) -> None:
    await ends.send(frame({"ready": True}))
    for _ in range(MAX_POLLS):
        await asyncio.sleep(0.002)
        if ends.channel._early:  # noqa: SLF001 - read, so that bind comes after the message
            break
    ends.bind()
    assert ends.messages == [{"ready": True}]


@pytest.mark.parametrize(("data", "reason"), [
    ((MAX_BYTES + 1).to_bytes(4, "big"), f"answer larger than {MAX_BYTES} bytes"),
    (b"\x00\x00\x00\x05nope!", "a frame is not JSON"),
    (frame([1, 2]), "a frame is not a JSON object"),
])
async def test_a_broken_frame_ends_the_channel_with_why(ends: Ends, data: bytes, reason: str) -> None:
    ends.bind()
    await ends.send(frame({"ready": True}) + data + frame({"id": 1, "status": 200, "body": "after"}))
    await ends.until(ended=True)
    assert ends.messages == [{"ready": True}]  # nothing after the broken frame is read
    assert ends.ended == [reason]
    assert await asyncio.get_running_loop().sock_recv(ends.peer, 1) == b""  # the gateway closed its end


async def test_a_stream_that_ends_inside_a_frame_is_broken_and_a_clean_end_is_not(ends: Ends) -> None:
    ends.bind()
    await ends.send(frame({"ready": True}) + frame({"id": 1, "status": 200, "body": "x"})[:9])
    ends.peer.shutdown(socket.SHUT_WR)
    await ends.until(messages=1, ended=True)
    assert ends.ended == ["the stream ended inside a frame"]


async def test_a_clean_end_of_the_stream_ends_the_channel_without_a_reason(ends: Ends) -> None:
    ends.bind()
    await ends.send(frame({"ready": True}))
    ends.peer.shutdown(socket.SHUT_WR)
    await ends.until(messages=1, ended=True)
    assert ends.ended == [None]


async def test_an_error_in_the_handler_of_a_message_ends_the_channel(ends: Ends) -> None:
    def reject(message: dict[str, Any]) -> None:
        raise wire.ProtocolError("an answer without a call's id")

    ended: list[str | None] = []
    ends.channel.bind(reject, ended.append)
    await ends.send(frame({"status": 200, "body": ""}))
    for _ in range(MAX_POLLS):
        if ended:
            break
        await asyncio.sleep(0.002)
    assert ended == ["an answer without a call's id"]


async def test_a_large_frame_in_many_pieces_arrives_whole() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.setblocking(False)
    channel = wire.Channel(8 << 20)
    await asyncio.get_running_loop().create_unix_connection(lambda: channel, sock=ours)
    ends = Ends(channel, theirs)
    ends.bind()
    try:
        big = {"id": 7, "status": 200, "body": "x" * (3 << 20)}
        data = frame(big) + frame({"id": 8, "status": 200, "body": ""})
        for i in range(0, len(data), 4093):  # pieces that cut the frames anywhere
            await ends.send(data[i:i + 4093])
        await ends.until(messages=2)
        assert ends.messages == [big, {"id": 8, "status": 200, "body": ""}]
        assert ends.ended == []
    finally:
        channel.abort()
        theirs.close()
