"""Task plugins: settings validation for each, and runs against local servers (no network)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from aiohttp import web

from taskagent import plugins
from taskagent.metrics import PluginError
from taskagent.plugins import RunContext, SettingsError, validate_settings


@contextlib.asynccontextmanager
async def serve(app: web.Application):
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def context(plugin: str, timeout: float = 5.0) -> RunContext:
    return RunContext(task_id=1, task_name="t", agent="a1", plugin=plugin, timestamp=1000.0, timeout=timeout)


async def run(plugin: str, settings: dict, timeout: float = 5.0):
    clean = validate_settings(plugin, settings)
    return {m.name: m for m in await plugins.get(plugin).run(clean, context(plugin, timeout))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- registry and validation -------------------------------------------------------------------------


def test_every_plugin_is_discovered():
    assert set(plugins.all_plugins()) >= {"http", "tcp", "dns", "ping", "ns1", "osquery"}
    for plugin in plugins.all_plugins().values():
        assert callable(plugin.run)
        for name, spec in plugin.schema["properties"].items():
            assert spec["type"] in ("string", "integer", "number", "boolean", "object"), name


def test_unknown_plugin():
    with pytest.raises(SettingsError) as info:
        validate_settings("telnet", {})
    assert "plugin" in info.value.errors


def test_secret_fields_are_marked():
    assert plugins.secret_fields_of("ns1") == ["api_key"]
    assert "headers" in plugins.secret_fields_of("http")
    assert plugins.secret_fields_of("tcp") == []


def test_defaults_are_filled_in():
    assert validate_settings("http", {"url": "https://example.com"}) == {
        "url": "https://example.com", "method": "GET", "timeout": 10, "headers": {}, "verify_tls": True,
    }
    assert validate_settings("ns1", {"zone": "example.com", "api_key": "k"})["base_url"] == "https://api.nsone.net"
    assert validate_settings("dns", {"name": "example.com"})["record_type"] == "A"
    assert validate_settings("ping", {"host": "10.0.0.1"})["count"] == 3


@pytest.mark.parametrize("plugin,given,errors", [
    ("http", {}, {"url": "is required"}),
    ("http", {"url": "ftp://x"}, {"url": "must be an http:// or https:// URL with a host"}),
    ("http", {"url": "https://"}, {"url": "must be an http:// or https:// URL with a host"}),
    ("http", {"url": "http://x", "method": "DELETE"},
     {"method": "must be one of GET, HEAD, POST, PUT, OPTIONS"}),
    ("http", {"url": "http://x", "timeout": 0}, {"timeout": "must be at least 0.1"}),
    ("http", {"url": "http://x", "timeout": 61}, {"timeout": "must be at most 60"}),
    ("http", {"url": "http://x", "timeout": "5"}, {"timeout": "must be a number"}),
    ("http", {"url": "http://x", "headers": {"a": 1}}, {"headers": "must be an object of strings"}),
    ("http", {"url": "http://x", "expected_text": ""}, {"expected_text": "must not be empty"}),
    ("http", {"url": "http://x", "verify_tls": "no"}, {"verify_tls": "must be true or false"}),
    ("http", {"url": "http://x", "uri": "typo"}, {"uri": "unknown setting"}),
    ("tcp", {"host": "db"}, {"port": "is required"}),
    ("tcp", {"host": "db", "port": 0}, {"port": "must be at least 1"}),
    ("tcp", {"host": "db", "port": 70000}, {"port": "must be at most 65535"}),
    ("tcp", {"host": "db", "port": 80.5}, {"port": "must be an integer"}),
    ("tcp", {"host": "db", "port": True}, {"port": "must be an integer"}),
    ("tcp", {"host": "a b", "port": 1}, {"host": "must be a host name or an IP address"}),
    ("dns", {"name": "example.com", "record_type": "ANY"},
     {"record_type": "must be one of A, AAAA, CNAME, MX, NS, TXT, SOA, SRV, PTR, CAA"}),
    ("dns", {}, {"name": "is required"}),
    ("ping", {"host": "-f"}, {"host": "must be a host name or an IP address"}),  # no option injection
    ("ping", {"host": "x", "count": 0}, {"count": "must be at least 1"}),
    ("ping", {"host": "x", "count": 21}, {"count": "must be at most 20"}),
    ("ns1", {"zone": "example.com"}, {"api_key": "is required"}),
    ("ns1", {"zone": "example.com", "api_key": ""}, {"api_key": "must not be empty"}),
    ("ns1", {"zone": "../x", "api_key": "k"}, {"zone": "must be a host name or an IP address"}),
    ("ns1", {"zone": "z", "api_key": "k", "base_url": "nsone"},
     {"base_url": "must be an http:// or https:// URL with a host"}),
    ("osquery", {}, {"query": "is required"}),
    ("osquery", {"query": ""}, {"query": "must not be empty"}),
])
def test_validation_errors_per_field(plugin, given, errors):
    with pytest.raises(SettingsError) as info:
        validate_settings(plugin, given)
    assert info.value.errors == errors


def test_all_errors_are_reported_at_once():
    with pytest.raises(SettingsError) as info:
        validate_settings("tcp", {"host": "", "port": "x", "extra": 1})
    assert set(info.value.errors) == {"host", "port", "extra"}
    with pytest.raises(SettingsError):
        validate_settings("tcp", ["not", "a", "dict"])


def test_validation_needs_only_the_standard_library():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['aiohttp'] = None; sys.modules['dns'] = None; sys.modules['django'] = None\n"
        "from taskagent.plugins import validate_settings\n"
        "print(validate_settings('ns1', {'zone': 'z.com', 'api_key': 'k'})['zone'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "z.com"


# --- http ----------------------------------------------------------------------------------------------


async def test_http_measures_status_latency_size_and_text():
    async def page(request):
        assert request.headers["X-Check"] == "1"
        return web.Response(text="hello fleet", status=203)

    async def slow(request):
        await asyncio.sleep(2)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/slow", slow)
    async with serve(app) as base:
        found = await run("http", {"url": base + "/", "expected_text": "fleet", "headers": {"X-Check": "1"}})
        assert found["http.status_code"].value == 203
        assert found["http.body_bytes"].value == len("hello fleet")
        assert found["http.expected_text_found"].value == 1.0
        assert 0 < found["http.latency_ms"].value < 2000
        assert found["http.latency_ms"].unit == "ms"
        assert found["http.status_code"].timestamp == 1000.0
        missing = await run("http", {"url": base + "/", "expected_text": "absent",
                                     "headers": {"X-Check": "1"}})
        assert missing["http.expected_text_found"].value == 0.0
        with pytest.raises(PluginError) as info:
            await run("http", {"url": base + "/slow", "timeout": 0.3})
        assert info.value.kind == "timeout"


async def test_http_closed_port_is_a_connect_failure():
    with pytest.raises(PluginError) as info:
        await run("http", {"url": f"http://127.0.0.1:{free_port()}/"})
    assert info.value.kind == "connect"


# --- tcp -----------------------------------------------------------------------------------------------


async def test_tcp_connects_to_a_listener():
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        found = await run("tcp", {"host": "127.0.0.1", "port": port})
    finally:
        server.close()
        await server.wait_closed()
    assert found["tcp.connect_ms"].value >= 0
    assert found["tcp.connect_ms"].tags == {"port": str(port)}


async def test_tcp_closed_port_is_a_failure_not_a_zero():
    with pytest.raises(PluginError) as info:
        await run("tcp", {"host": "127.0.0.1", "port": free_port()})
    assert info.value.kind == "refused"


# --- ns1 -----------------------------------------------------------------------------------------------


async def test_ns1_reads_qps_and_errors_are_failures():
    seen = []

    async def qps(request):
        seen.append((request.path, request.headers.get("X-NSONE-KEY")))
        zone = request.match_info["zone"]
        if request.headers.get("X-NSONE-KEY") != "good":
            return web.json_response({"message": "Unauthorized"}, status=401)
        if zone == "broken.com":
            return web.json_response({"message": "boom"}, status=500)
        if zone == "odd.com":
            return web.json_response({"message": "no qps here"})
        return web.json_response({"qps": 12.5})

    app = web.Application()
    app.router.add_get("/v1/stats/qps/{zone}", qps)
    async with serve(app) as base:
        found = await run("ns1", {"zone": "example.com", "api_key": "good", "base_url": base})
        assert found["ns1.qps"].value == 12.5
        assert found["ns1.qps"].tags == {"zone": "example.com"}
        assert seen[-1] == ("/v1/stats/qps/example.com", "good")
        for zone, key, kind in [("example.com", "bad", "auth"), ("broken.com", "good", "http_status"),
                                ("odd.com", "good", "bad_response")]:
            with pytest.raises(PluginError) as info:
                await run("ns1", {"zone": zone, "api_key": key, "base_url": base})
            assert info.value.kind == kind
    with pytest.raises(PluginError) as info:
        await run("ns1", {"zone": "example.com", "api_key": "good", "base_url": f"http://127.0.0.1:{free_port()}"})
    assert info.value.kind == "connect"


# --- dns, against a tiny local DNS server --------------------------------------------------------------


class _Dns(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        import dns.message
        import dns.rcode
        import dns.rrset

        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text()
        if name == "two.test.":
            reply.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.1", "192.0.2.2"))
        elif name == "none.test.":
            reply.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(reply.to_wire(), addr)


async def test_dns_counts_answers_and_nxdomain_is_a_failure():
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Dns, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        found = await run("dns", {"name": "two.test", "server": "127.0.0.1", "port": port})
        assert found["dns.answers"].value == 2
        assert found["dns.resolve_ms"].tags == {"record_type": "A"}
        empty = await run("dns", {"name": "two.test", "record_type": "MX", "server": "127.0.0.1",
                                  "port": port})
        assert empty["dns.answers"].value == 0  # the name exists, without MX records: that is data
        with pytest.raises(PluginError) as info:
            await run("dns", {"name": "none.test", "server": "127.0.0.1", "port": port})
        assert info.value.kind == "nxdomain"
    finally:
        transport.close()


# --- ping and osquery: absent tools are explicit failures ----------------------------------------------


async def test_ping_without_a_binary_is_unsupported(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(PluginError) as info:
        await run("ping", {"host": "127.0.0.1"})
    assert info.value.kind == "unsupported"


def test_ping_output_parsing():
    from taskagent.plugins.ping import parse_output

    iputils = ("3 packets transmitted, 3 received, 0% packet loss, time 2003ms\n"
               "rtt min/avg/max/mdev = 0.031/0.045/0.060/0.012 ms\n")
    assert parse_output(iputils) == (0.0, (0.031, 0.045, 0.06))
    busybox = ("3 packets transmitted, 2 packets received, 33% packet loss\n"
               "round-trip min/avg/max = 1.1/2.2/3.3 ms")
    assert parse_output(busybox) == (0.33, (1.1, 2.2, 3.3))
    assert parse_output("3 packets transmitted, 0 received, 100% packet loss") == (1.0, None)


async def test_osquery_without_a_socket_is_a_failure(tmp_path):
    with pytest.raises(PluginError) as info:
        await run("osquery", {"query": "select 1", "socket": str(tmp_path / "osquery.em")})
    assert info.value.kind == "socket_missing"


async def test_osquery_without_osqueryi_is_unsupported(tmp_path, monkeypatch):
    sock = tmp_path / "osquery.em"
    sock.touch()
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(PluginError) as info:
        await run("osquery", {"query": "select 1", "socket": str(sock)})
    assert info.value.kind == "unsupported"
