"""The egress guard: classifier, literal parsing, URL rules, and the guarded outbound client.

Every connection here goes to a real aiohttp receiver on loopback; public addresses are only
classified, never connected to, and the netguard plugin fails any test that tries otherwise.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fakes import FakeResolver

from gateway.egress import (
    REFUSED_RANGES,
    GuardedResolver,
    check_url,
    classify,
    parse_ip_literal,
)
from gateway.errors import BadRequest, DestinationRefused
from gateway.peers import Cidrs
from gateway.transport import Answer, Target, Transport

pytest_plugins = ["pytester"]

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]

ServerFactory = Callable[..., Awaitable[TestServer]]


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


# --- classifier ---------------------------------------------------------------------------

INSIDE_EACH_RANGE = [
    ("0.1.2.3", "0.0.0.0/8"),
    ("10.0.0.5", "10.0.0.0/8"),
    ("100.64.0.1", "100.64.0.0/10"),
    ("127.0.0.1", "127.0.0.0/8"),
    ("169.254.169.254", "169.254.0.0/16"),
    ("172.16.0.1", "172.16.0.0/12"),
    ("192.0.0.170", "192.0.0.0/24"),
    ("192.0.2.1", "192.0.2.0/24"),
    ("192.88.99.1", "192.88.99.0/24"),
    ("192.168.1.1", "192.168.0.0/16"),
    ("198.19.255.255", "198.18.0.0/15"),
    ("198.51.100.7", "198.51.100.0/24"),
    ("203.0.113.10", "203.0.113.0/24"),
    ("239.255.255.250", "224.0.0.0/4"),
    ("240.0.0.1", "240.0.0.0/4"),
    ("255.255.255.255", "255.255.255.255/32"),
    ("::", "::/128"),
    ("::1", "::1/128"),
    ("fd00::1", "fc00::/7"),
    ("fe80::1", "fe80::/10"),
    ("ff02::1", "ff00::/8"),
    ("2001:db8::1", "2001:db8::/32"),
    ("::7f00:1", "::/96"),  # IPv4-compatible: deprecated, never routed
    ("::ffff:0:a00:5", "::ffff:0:0:0/96"),  # IPv4-translated
    ("64:ff9b:1::a00:5", "64:ff9b:1::/48"),  # local-use NAT64: may reach internal IPv4
    ("100::1", "100::/64"),
    ("2001:0:4136:e378::1", "2001::/32"),  # Teredo
    ("2001:2::1", "2001:2::/48"),
    ("fec0::1", "fec0::/10"),
]


def test_refused_ranges_are_exactly_the_documented_ones() -> None:
    assert {str(r.network) for r in REFUSED_RANGES} == {range_ for _, range_ in INSIDE_EACH_RANGE}
    assert all(r.name for r in REFUSED_RANGES)


@pytest.mark.parametrize(("address", "range_"), INSIDE_EACH_RANGE)
def test_address_inside_a_refused_range_is_refused_with_its_name(address: str, range_: str) -> None:
    assert classify(ip(address), []) == range_


@pytest.mark.parametrize(
    ("address", "range_"),
    [
        ("::ffff:127.0.0.1", "127.0.0.0/8"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "169.254.0.0/16"),
        ("::ffff:0.0.0.0", "0.0.0.0/8"),
        ("64:ff9b::10.0.0.5", "10.0.0.0/8"),  # NAT64: the last 32 bits
        ("64:ff9b::a9fe:a9fe", "169.254.0.0/16"),
        ("2002:7f00:1::", "127.0.0.0/8"),  # 6to4: bits 16..48
        ("2002:a9fe:a9fe:1234::1", "169.254.0.0/16"),
    ],
)
def test_embedded_ipv4_is_classified_as_itself(address: str, range_: str) -> None:
    assert classify(ip(address), []) == range_


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "8.8.8.8",
        "2606:4700::1111",
        "::ffff:93.184.216.34",
        "64:ff9b::5db8:d822",
        "2002:5db8:d822::1",
        "172.32.0.1",
        "100.128.0.1",
    ],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert classify(ip(address), []) is None


def test_allow_cidrs_make_exceptions_and_apply_to_embedded_addresses() -> None:
    allow = [ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("fd00::/8")]
    assert classify(ip("10.1.2.3"), allow) is None
    assert classify(ip("::ffff:10.1.2.3"), allow) is None
    assert classify(ip("64:ff9b::10.1.2.3"), allow) is None
    assert classify(ip("fd00::1"), allow) is None
    assert classify(ip("10.2.0.1"), allow) == "10.0.0.0/8"
    assert classify(ip("fc00::1"), allow) == "fc00::/7"


# --- literal notations --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7F.0.0.0x1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("[::ffff:7f00:1]", "::ffff:7f00:1"),
        ("::ffff:7f00:1", "::ffff:7f00:1"),
    ],
)
def test_odd_notations_of_loopback_normalise_and_are_refused(host: str, expected: str) -> None:
    address = parse_ip_literal(host)
    assert address == ip(expected)
    assert classify(address, []) == "127.0.0.0/8"


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "localhost",
        "hooks.example.test",
        "0x7g.1",
        "08.0.0.1",
        "1.2.3.256",
        "256.0.0.1",
        "4294967296",
        "0x100000000",
        "1..2",
        "1.2.3.4.5",
        "[::1",
        "[example.com]",
        "[1.2.3.4]",
        "127.0.0.1.example.com",
        "\uff11\uff12\uff17.0.0.1",
        "",
    ],
)
def test_hostnames_and_out_of_range_parts_are_not_literals(host: str) -> None:
    assert parse_ip_literal(host) is None


# --- check_url ----------------------------------------------------------------------------


def test_http_is_refused_unless_allowed() -> None:
    with pytest.raises(BadRequest, match="https"):
        check_url("http://hooks.example.com/x", allow_http=False, allow_cidrs=[])
    check_url("http://hooks.example.com/x", allow_http=True, allow_cidrs=[])


@pytest.mark.parametrize("url", ["ftp://hooks.example.com/", "hooks.example.com/x", "file:///etc/passwd"])
def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(BadRequest):
        check_url(url, allow_http=True, allow_cidrs=[])


@pytest.mark.parametrize("url", ["https://user:pw@hooks.example.com/", "https://user@hooks.example.com/"])
def test_user_info_is_refused(url: str) -> None:
    with pytest.raises(BadRequest, match="user-info"):
        check_url(url, allow_http=False, allow_cidrs=[])


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://a..b.example.com/x", "invalid host name"),  # an empty label
        ("https://" + "a" * 64 + ".example.com/x", "invalid host name"),  # a label over 63 bytes
        ("https://" + ("a" * 60 + ".") * 5 + "com/x", "invalid host name"),  # over 253 bytes
        ("https://hooks.example.com:0/x", "port 0"),
    ],
)
def test_url_that_dns_or_tcp_cannot_carry_is_refused(url: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        check_url(url, allow_http=False, allow_cidrs=[])


def test_longest_valid_host_name_is_accepted() -> None:
    check_url("https://" + "a" * 63 + ".example.com./x", allow_http=False, allow_cidrs=[])


def test_url_without_host_is_refused() -> None:
    with pytest.raises(BadRequest, match="host"):
        check_url("https:///path", allow_http=False, allow_cidrs=[])


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/x", "destination refused: 127.0.0.1 (127.0.0.0/8)"),
        ("https://2130706433/x", "destination refused: 127.0.0.1 (127.0.0.0/8)"),
        ("https://0x7f.1:8443/x", "destination refused: 127.0.0.1 (127.0.0.0/8)"),
        ("https://169.254.169.254/latest/meta-data", "destination refused: 169.254.169.254 (169.254.0.0/16)"),
        ("https://[::ffff:169.254.169.254]/", "destination refused: ::ffff:a9fe:a9fe (169.254.0.0/16)"),
        ("https://[fd00::1]/", "destination refused: fd00::1 (fc00::/7)"),
    ],
)
def test_literal_refused_address_is_refused(url: str, reason: str) -> None:
    with pytest.raises(BadRequest) as info:
        check_url(url, allow_http=False, allow_cidrs=[])
    assert reason in info.value.message


def test_hostnames_and_allowed_literals_pass_without_dns() -> None:
    # netguard would fail this test if check_url resolved anything.
    check_url("https://hooks.example.com/auth0/post-login", allow_http=False, allow_cidrs=[])
    check_url("https://localhost/x", allow_http=False, allow_cidrs=[])
    check_url("https://93.184.216.34/x", allow_http=False, allow_cidrs=[])
    check_url("https://10.1.2.3/x", allow_http=False, allow_cidrs=[ipaddress.ip_network("10.1.0.0/16")])


# --- guarded resolver and connector -------------------------------------------------------


@dataclass
class Receiver:
    """A real aiohttp server on loopback that records what reached it."""

    server: TestServer
    requests: list[web.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    @property
    def port(self) -> int:
        port = self.server.port
        assert port is not None
        return port


ReceiverFactory = Callable[..., Awaitable[Receiver]]


@pytest.fixture
def receiver(aiohttp_server: ServerFactory) -> ReceiverFactory:
    async def make(respond: Callable[[web.Request], web.StreamResponse] | None = None) -> Receiver:
        async def handle(request: web.Request) -> web.StreamResponse:
            made.requests.append(request)
            made.bodies.append(await request.read())
            return respond(request) if respond is not None else web.Response(text="ok")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        made = Receiver(await aiohttp_server(app))
        return made

    return make


def target(url: str) -> Target:
    """The parsed target without the URL-level check: what the connect-time guard must refuse."""
    return Target.of(url, allow_http=True, allow_cidrs=Cidrs(LOOPBACK))


async def post(transport: Transport, url: str, body: bytes = b"{}") -> Answer:
    try:
        return await transport.post(target(url), body, {}, timeout_s=5.0, body_cap=1024)
    finally:
        await transport.close()


@pytest.mark.parametrize(
    "answer",
    [["10.0.0.5"], ["169.254.169.254"], ["fd00::1"], ["93.184.216.34", "10.0.0.5"]],
)
async def test_refused_dns_answer_fails_before_any_connect(
    answer: list[str], netguard_attempts: list[tuple[str, int]]
) -> None:
    inner = FakeResolver({"hooks.example.test": answer})
    with pytest.raises(DestinationRefused) as info:
        await post(Transport(allow_cidrs=[], resolver=inner), "https://hooks.example.test/hook")
    refusal = info.value
    assert refusal.address == ("10.0.0.5" if len(answer) > 1 else answer[0])
    assert str(refusal).startswith(f"destination refused: {refusal.address} (")
    assert inner.asked == ["hooks.example.test"]
    assert netguard_attempts == []  # not even the public address of a mixed answer was tried


async def test_resolver_reads_odd_literals_itself_without_dns() -> None:
    inner = FakeResolver({})
    resolver = GuardedResolver(allow_cidrs=[], inner=inner)
    with pytest.raises(DestinationRefused, match=r"destination refused: 127\.0\.0\.1 \(127\.0\.0\.0/8\)"):
        await resolver.resolve("0x7f.1", 80)
    allowed = await GuardedResolver(allow_cidrs=LOOPBACK, inner=inner).resolve("0x7f.1", 80)
    assert [r["host"] for r in allowed] == ["127.0.0.1"]
    assert inner.asked == []


async def test_allowed_loopback_receiver_gets_the_request(receiver: ReceiverFactory) -> None:
    got = await receiver()
    inner = FakeResolver({"receiver.test": ["127.0.0.1"]})
    answer = await post(Transport(allow_cidrs=LOOPBACK, resolver=inner), f"http://receiver.test:{got.port}/hook",
                        b'{"a":1}')
    assert (answer.status, answer.body) == (200, b"ok")
    assert got.bodies == [b'{"a":1}']
    assert got.requests[0].host == f"receiver.test:{got.port}"


@pytest.mark.parametrize(
    ("url", "ranges"),
    [
        ("http://127.0.0.1:{port}/hook", {"127.0.0.0/8"}),
        ("http://localhost:{port}/hook", {"127.0.0.0/8", "::1/128"}),  # the real resolver
        ("http://[::ffff:127.0.0.1]:{port}/hook", {"127.0.0.0/8"}),
        ("http://0x7f.1:{port}/hook", {"127.0.0.0/8"}),
    ],
)
async def test_loopback_is_refused_unless_allowed(
    receiver: ReceiverFactory, url: str, ranges: set[str]
) -> None:
    got = await receiver()
    with pytest.raises(DestinationRefused) as info:
        await post(Transport(allow_cidrs=[]), url.format(port=got.port))
    refusal = info.value
    assert refusal.range in ranges
    assert str(refusal) == f"destination refused: {refusal.address} ({refusal.range})"
    assert got.requests == []


async def test_redirect_is_not_followed(receiver: ReceiverFactory) -> None:
    second = await receiver()
    first = await receiver(
        lambda request: web.Response(status=302, headers={"Location": f"http://127.0.0.1:{second.port}/x"})
    )
    answer = await post(Transport(allow_cidrs=LOOPBACK), f"http://127.0.0.1:{first.port}/hook")
    assert answer.status == 302
    assert answer.headers["location"] == f"http://127.0.0.1:{second.port}/x"
    assert len(first.requests) == 1
    assert second.requests == []


@pytest.mark.parametrize(
    "source",
    [
        "127.0.0.1",
        pytest.param(
            "127.0.0.2",
            marks=pytest.mark.skipif(sys.platform != "linux", reason="only Linux routes all of 127/8"),
        ),
    ],
)
async def test_source_address_is_bound(receiver: ReceiverFactory, source: str) -> None:
    got = await receiver()
    answer = await post(Transport(allow_cidrs=LOOPBACK, source_address=source), f"http://127.0.0.1:{got.port}/hook")
    assert answer.status == 200
    assert [r.remote for r in got.requests] == [source]


# --- the netguard plugin ------------------------------------------------------------------


def test_netguard_blocks_a_connect_beyond_loopback(netguard_attempts: list[tuple[str, int]]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(OSError, match="netguard"):
            sock.connect(("10.255.255.1", 9))
        assert sock.connect_ex(("10.255.255.1", 9)) != 0
        with pytest.raises(OSError):
            sock.getpeername()  # never connected: nothing was sent
    assert netguard_attempts == [("10.255.255.1", 9), ("10.255.255.1", 9)]
    netguard_attempts.clear()  # the guard worked; do not fail this test for it


async def test_netguard_blocks_asyncio_connections(netguard_attempts: list[tuple[str, int]]) -> None:
    import asyncio

    with pytest.raises(OSError, match="netguard"):
        await asyncio.open_connection("10.255.255.1", 9)
    with pytest.raises(OSError, match="netguard"):
        await asyncio.open_connection("hooks.example.com", 443)  # refused before any DNS
    assert netguard_attempts == [("10.255.255.1", 9), ("hooks.example.com", 443)]
    netguard_attempts.clear()


def test_netguard_fails_the_test_and_names_the_address(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(netguard=Path(__file__).with_name("netguard.py").read_text())
    pytester.makeconftest('pytest_plugins = ["netguard"]')
    pytester.makepyfile(
        test_leak="""
        import socket

        def test_swallows_the_error():
            try:
                socket.create_connection(("10.255.255.1", 9), timeout=0.5)
            except OSError:
                pass

        def test_stays_on_loopback():
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*netguard*10.255.255.1:9*"])
