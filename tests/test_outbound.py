"""The outbound HTTP client's SSRF rules and limits, against real HTTP servers on loopback.

The resolver passed to the client is the DNS answer of each scenario (a host name that resolves to
127.0.0.1, 10.x, 169.254.169.254, ::1, or an answer that changes between lookups); everything else
(sockets, HTTP, TLS, the servers) is real."""
from __future__ import annotations

import shutil
import ssl
import threading
import time

import pytest

from modula_desktop.core.metrics import Metrics
from modula_desktop.core.plugins.api.outbound import OutboundArgumentError, OutboundClient, refusal
from modula_desktop.core.settings import PluginSettings

from _outbound_servers import LoopbackServer, make_cert


def settings(**kw):
    return PluginSettings(**kw)


class Resolver:
    """A DNS answer per host name, counting lookups; a list of answers is served one per lookup
    (the last one repeats)."""

    def __init__(self, answers: dict):
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, host, port):
        self.calls.append(host)
        answer = self.answers.get(host)
        if answer is None:
            raise OSError("no such host")
        if isinstance(answer, list) and answer and isinstance(answer[0], list):
            seen = self.calls.count(host)
            return answer[min(seen, len(answer)) - 1]
        return answer if isinstance(answer, list) else [answer]


def client(resolver=None, **kw):
    return OutboundClient(settings(**kw), resolver=resolver)


def anyone(host):
    return True


def send(c, method, url, opts=None, approved=anyone, deadline=None, plugin="p"):
    return c.send(plugin, c.prepare(method, url, opts), approved, deadline)


@pytest.fixture
def server():
    with LoopbackServer() as s:
        yield s


# ---- address rules ---------------------------------------------------------------------------
@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.9.9.9", "10.0.0.8", "172.16.5.5", "172.31.255.255", "192.168.1.1", "169.254.169.254",
    "169.254.0.1", "100.64.1.1", "100.127.255.254", "198.18.0.1", "198.19.255.255", "0.0.0.0", "0.1.2.3",
    "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "192.0.0.8",
    "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "ff02::1", "::ffff:10.0.0.1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a00:1", "2002:a00:1::1",
])
def test_refused_addresses(address):
    assert refusal(address) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "8.8.8.8", "2606:4700:4700::1111",
                                     "172.32.0.1", "100.128.0.1", "198.20.0.1"])
def test_public_addresses_pass(address):
    assert refusal(address) is None


def test_allow_localhost_lifts_only_loopback():
    for a in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert refusal(a, allow_localhost=True) is None
    for a in ("10.0.0.1", "169.254.169.254", "192.168.0.1", "fe80::1", "fc00::1", "0.0.0.0", "::"):
        assert refusal(a, allow_localhost=True) is not None


# ---- a host name whose DNS answer is internal ------------------------------------------------
def test_name_resolving_to_loopback_is_refused_and_nothing_is_sent(server):
    r = Resolver({"api.example.com": "127.0.0.1"})
    ans = send(client(r), "GET", f"https://api.example.com:{server.port}/ok")
    assert "private/reserved IP address blocked" in ans["error"] and "127.0.0.1" in ans["error"]
    assert "status" not in ans
    ans = send(client(r), "GET", f"http://api.example.com:{server.port}/ok")
    assert "blocked" in ans["error"]
    assert server.requests == []


@pytest.mark.parametrize("address", ["10.1.2.3", "169.254.169.254", "100.64.0.1", "198.18.0.7", "192.168.0.10",
                                     "172.20.0.1", "0.0.0.0"])
def test_name_resolving_to_internal_address_is_refused(address):
    r = Resolver({"metadata.example.com": address})
    # allow_localhost changes nothing for these
    for allow in (False, True):
        ans = send(client(r, allow_localhost=allow), "GET", "https://metadata.example.com/latest/meta-data/")
        assert ans["error"].startswith("request to private/reserved IP address blocked"), ans
        assert address in ans["error"]


def test_name_resolving_to_ipv6_loopback_is_refused():
    with LoopbackServer("::1") as s6:
        r = Resolver({"six.example.com": "::1"})
        ans = send(client(r), "GET", f"https://six.example.com:{s6.port}/ok")
        assert "blocked" in ans["error"] and "::1" in ans["error"]
        ans = send(client(r), "GET", f"http://[::1]:{s6.port}/ok")
        assert "blocked" in ans["error"]
        assert s6.requests == []
        # the switch for local development lifts it: the same request now arrives
        ans = send(client(r, allow_localhost=True), "GET", f"http://six.example.com:{s6.port}/ok", {"parse_json": True})
        assert ans["status"] == 200 and ans["json"]["ok"] is True
        assert s6.requests[0]["headers"]["Host"] == f"six.example.com:{s6.port}"


def test_ip_literals_are_checked_too(server):
    for url in (f"http://127.0.0.1:{server.port}/ok", f"https://127.0.0.1:{server.port}/ok",
                "https://169.254.169.254/latest/", "https://[::ffff:127.0.0.1]/", "https://[fe80::1]/",
                "https://10.0.0.1/"):
        ans = send(client(Resolver({})), "GET", url)
        assert "blocked" in ans["error"], url
    assert server.requests == []


def test_one_internal_address_in_the_answer_refuses_the_name(server):
    r = Resolver({"mixed.example.com": ["93.184.216.34", "10.0.0.1"]})
    ans = send(client(r), "GET", "https://mixed.example.com/")
    assert "blocked" in ans["error"] and "10.0.0.1" in ans["error"]
    r = Resolver({"mixed.example.com": ["127.0.0.1", "10.0.0.1"]})
    ans = send(client(r, allow_localhost=True), "GET", f"http://mixed.example.com:{server.port}/ok")
    assert "blocked" in ans["error"]
    assert server.requests == []


def test_a_hanging_dns_lookup_cannot_outlive_the_deadline():
    release = threading.Event()

    def stuck(host, port):
        release.wait(10)
        return ["93.184.216.34"]

    try:
        ans = send(client(stuck), "GET", "https://slow-dns.example.com/", deadline=time.monotonic() + 0.5)
        assert ans["error"] == "request timed out: dns lookup of slow-dns.example.com took too long"
    finally:
        release.set()


def test_dns_failure_is_an_answer():
    ans = send(client(Resolver({})), "GET", "https://nowhere.example.com/")
    assert ans == {"error": "dns lookup failed: nowhere.example.com"}


# ---- pinning: no second lookup ------------------------------------------------------------------
def test_connection_goes_to_the_checked_address_even_when_dns_changes(server):
    # the second lookup would answer another server on the same port: a client that resolves
    # again at connect time (rebinding) would reach it
    with LoopbackServer("127.0.0.2", port=server.port, label="other") as other:
        r = Resolver({"rebind.example.com": [["127.0.0.1"], ["127.0.0.2"]]})
        c = client(r, allow_localhost=True)
        ans = send(c, "GET", f"http://rebind.example.com:{server.port}/ok", {"parse_json": True})
        assert ans["status"] == 200 and ans["json"]["server"] == "127.0.0.1"
        assert r.calls == ["rebind.example.com"]  # one lookup, checked, connected to
        assert len(server.requests) == 1 and other.requests == []
        assert server.requests[0]["headers"]["Host"] == f"rebind.example.com:{server.port}"
        # the next request resolves again (a new check), and goes where that answer says
        ans = send(c, "GET", f"http://rebind.example.com:{server.port}/ok", {"parse_json": True})
        assert ans["json"]["server"] == "other" and len(other.requests) == 1


def test_rebinding_to_a_private_address_is_caught_on_the_next_lookup(server):
    r = Resolver({"rebind.example.com": [["127.0.0.1"], ["10.0.0.1"]]})
    c = client(r, allow_localhost=True)
    assert send(c, "GET", f"http://rebind.example.com:{server.port}/ok")["status"] == 200
    ans = send(c, "GET", f"http://rebind.example.com:{server.port}/ok")
    assert "blocked" in ans["error"] and "10.0.0.1" in ans["error"]
    assert len(server.requests) == 1


# ---- schemes ----------------------------------------------------------------------------------
def test_http_only_to_loopback_with_allow_localhost(server):
    r = Resolver({"public.example.com": "93.184.216.34"})
    ans = send(client(r, allow_localhost=True), "GET", "http://public.example.com/")
    assert ans["error"].startswith("HTTP scheme requires HTTPS")
    ans = send(client(r), "GET", "ftp://public.example.com/")
    assert "unsupported URL scheme 'ftp'" in ans["error"]
    assert send(client(Resolver({}), allow_localhost=True), "GET",
                f"http://127.0.0.1:{server.port}/ok")["status"] == 200


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificate")
def test_https_pins_the_address_and_keeps_the_name_for_sni(server, tmp_path):
    cert, key = make_cert(tmp_path, "api.example.test")
    with LoopbackServer(tls=(cert, key)) as tls_server:
        ctx = ssl.create_default_context(cafile=cert)
        r = Resolver({"api.example.test": "127.0.0.1", "wrong.example.test": "127.0.0.1"})
        c = OutboundClient(settings(allow_localhost=True), resolver=r, ssl_context=ctx)
        ans = c.send("p", c.prepare("GET", f"https://api.example.test:{tls_server.port}/ok", {"parse_json": True}),
                     anyone)
        assert ans["status"] == 200 and ans["json"] == {"ok": True, "server": "127.0.0.1"}
        assert tls_server.requests[0]["headers"]["Host"] == f"api.example.test:{tls_server.port}"
        # the certificate is checked against the name asked for, not the address connected to
        ans = c.send("p", c.prepare("GET", f"https://wrong.example.test:{tls_server.port}/ok", None), anyone)
        assert ans["error"].startswith("tls handshake failed: wrong.example.test")
        assert len(tls_server.requests) == 1


# ---- redirects --------------------------------------------------------------------------------
def test_redirect_to_a_private_address_is_refused(server):
    r = Resolver({"good.example.com": "127.0.0.1", "internal.example.com": "10.0.0.5"})
    c = client(r, allow_localhost=True)
    for target in ("http://internal.example.com/admin", "http://169.254.169.254/latest/meta-data/",
                   "http://[fc00::1]/", "https://internal.example.com/"):
        ans = send(c, "GET", f"http://good.example.com:{server.port}/redirect?to={target}")
        assert "blocked" in ans["error"], (target, ans)


def test_redirect_to_loopback_is_refused_without_the_switch():
    with LoopbackServer("::1") as s6, LoopbackServer() as s4:
        # the first hop is allowed (::1 with the switch) ... this proves the re-check uses the rules
        r = Resolver({"good.example.com": "::1", "sneaky.example.com": "127.0.0.1"})
        c = client(r, allow_localhost=True)
        ans = send(c, "GET", f"http://good.example.com:{s6.port}/redirect?to=http://sneaky.example.com:{s4.port}/ok",
                   approved=lambda h: h == "good.example.com")
        assert ans["error"] == "domain not approved: sneaky.example.com"
        assert s4.requests == []


def test_redirect_is_followed_and_checked_again(server):
    r = Resolver({"a.example.com": "127.0.0.1", "b.example.com": "127.0.0.1"})
    c = client(r, allow_localhost=True)
    ans = send(c, "POST", f"http://a.example.com:{server.port}/redirect?to=http://b.example.com:{server.port}/echo&code=303",
               {"body": "secret", "headers": {"Authorization": "Bearer t"}, "parse_json": True})
    assert ans["status"] == 200
    assert ans["json"]["method"] == "GET" and ans["json"]["body"] == ""
    # credentials are not carried to another host
    assert "Authorization" not in ans["json"]["headers"]
    assert r.calls == ["a.example.com", "b.example.com"]
    # 307 keeps the method and body
    ans = send(c, "PUT", f"http://a.example.com:{server.port}/redirect?to=/echo&code=307",
               {"body": "keep", "headers": {"Authorization": "Bearer t"}, "parse_json": True})
    assert ans["json"]["method"] == "PUT" and ans["json"]["body"] == "keep"
    assert ans["json"]["headers"]["Authorization"] == "Bearer t"


def test_redirect_limit(server):
    r = Resolver({"a.example.com": "127.0.0.1"})
    ans = send(client(r, allow_localhost=True), "GET", f"http://a.example.com:{server.port}/loop")
    assert ans == {"error": "too many redirects (more than 5)"}
    assert len(server.requests) == 6


def test_follow_redirects_false_returns_the_redirect(server):
    r = Resolver({"a.example.com": "127.0.0.1"})
    ans = send(client(r, allow_localhost=True), "GET",
               f"http://a.example.com:{server.port}/redirect?to=http://10.0.0.1/", {"follow_redirects": False})
    assert ans["status"] == 302 and ans["headers"]["location"] == "http://10.0.0.1/"


# ---- size and time ----------------------------------------------------------------------------
def test_oversize_bodies_are_refused(server):
    r = Resolver({"a.example.com": "127.0.0.1"})
    c = client(r, allow_localhost=True, request_max_response=1000)
    assert send(c, "GET", f"http://a.example.com:{server.port}/big?n=1000")["body"] == b"x" * 1000
    ans = send(c, "GET", f"http://a.example.com:{server.port}/big?n=5000000")
    assert ans == {"error": "response exceeded maximum size (1000 bytes)"}
    ans = send(c, "GET", f"http://a.example.com:{server.port}/chunked?n=5000000")
    assert ans == {"error": "response exceeded maximum size (1000 bytes)"}
    with pytest.raises(OutboundArgumentError, match="request body exceeds maximum size"):
        client(r, request_max_body=10).prepare("POST", "https://a.example.com/", {"body": "x" * 11})


def test_slow_server_times_out(server):
    r = Resolver({"a.example.com": "127.0.0.1"})
    c = client(r, allow_localhost=True)
    ans = send(c, "GET", f"http://a.example.com:{server.port}/slow?ms=3000", {"timeout": 0.3})
    assert ans["error"].startswith("request timed out")


def test_trickling_server_cannot_outlive_the_callers_deadline(server):
    # a byte every 100 ms never trips a per-read timeout; the deadline bounds the whole exchange
    r = Resolver({"a.example.com": "127.0.0.1"})
    c = client(r, allow_localhost=True)
    started = time.monotonic()
    ans = send(c, "GET", f"http://a.example.com:{server.port}/trickle?n=100&ms=100", deadline=started + 0.6)
    elapsed = time.monotonic() - started
    assert ans["error"].startswith("request timed out")
    assert elapsed < 2.0  # the safety target: within the caller's deadline (0.6 s), with margin
    ans = send(c, "GET", f"http://a.example.com:{server.port}/ok", deadline=time.monotonic() - 1)
    assert ans["error"].startswith("request timed out: no time left")


# ---- arguments, answers, limits, metrics ------------------------------------------------------
def test_argument_errors():
    c = client(Resolver({}))
    for method, url, opts, text in [
        ("TRACE", "https://a.example.com/", None, "invalid HTTP method"),
        ("GET", "https://user:pw@a.example.com/", None, "userinfo"),
        ("GET", "a.example.com/x", None, "must include scheme and host"),
        ("GET", "https://a.example.com/ x", None, "whitespace"),
        ("POST", "https://a.example.com/", {"body": "a", "json": {"b": 1}}, "mutually exclusive"),
        ("GET", "https://a.example.com/", {"headers": {"Host": "b.example.com"}}, "set by the host"),
        ("GET", "https://a.example.com/", {"headers": {"X-A": "1\r\nX-B: 2"}}, "invalid header"),
        ("GET", "https://a.example.com/", {"timeout": -1}, "timeout must be a positive"),
    ]:
        with pytest.raises(OutboundArgumentError, match=text):
            c.prepare(method, url, opts)


def test_answer_shape(server):
    r = Resolver({"a.example.com": "127.0.0.1"})
    c = client(r, allow_localhost=True)
    ans = send(c, "POST", f"http://a.example.com:{server.port}/echo", {"json": {"n": 1}, "parse_json": True,
                                                                         "headers": {"X-Custom": "v"}})
    assert ans["status"] == 200 and ans["headers"]["content-type"] == "application/json"
    assert ans["json"]["headers"]["Content-Type"] == "application/json"
    assert ans["json"]["headers"]["X-Custom"] == "v"
    assert ans["json"]["headers"]["User-Agent"].startswith("ModulaDesktop-Plugin/")
    assert ans["json"]["body"] == '{"n": 1}'
    ans = send(c, "GET", f"http://a.example.com:{server.port}/text", {"parse_json": True})
    assert ans["body"] == b"plain text" and "json" not in ans and ans["headers"]["x-test"] == "yes"
    ans = send(c, "GET", f"http://a.example.com:{server.port}/ok")
    assert "json" not in ans  # parse_json is opt-in, as in ModulaCMS


def test_unapproved_domain_sends_nothing(server):
    r = Resolver({"a.example.com": "127.0.0.1"})
    ans = send(client(r, allow_localhost=True), "GET", f"http://a.example.com:{server.port}/ok",
               approved=lambda h: False)
    assert ans == {"error": "domain not approved: a.example.com"}
    assert server.requests == [] and r.calls == []


def test_rate_limit_per_plugin(server):
    r = Resolver({"a.example.com": "127.0.0.1"})
    c = client(r, allow_localhost=True, request_rate_burst=2, request_rate_per_min=1)
    url = f"http://a.example.com:{server.port}/ok"
    assert send(c, "GET", url)["status"] == 200 and send(c, "GET", url)["status"] == 200
    assert send(c, "GET", url) == {"error": "rate limit exceeded for domain: a.example.com"}
    assert send(c, "GET", url, plugin="other")["status"] == 200  # another plugin has its own bucket
    assert len(server.requests) == 3


def test_metrics_by_plugin_domain_outcome(server):
    m = Metrics()
    r = Resolver({"a.example.com": "127.0.0.1", "bad.example.com": "10.0.0.1"})
    c = OutboundClient(settings(allow_localhost=True), metrics=m, resolver=r)
    send(c, "GET", f"http://a.example.com:{server.port}/ok", plugin="p1")
    send(c, "GET", "https://bad.example.com/", plugin="p1")
    send(c, "GET", "https://x.example.com/", plugin="p1", approved=lambda h: False)
    name = "modula_plugin_outbound_requests_total"
    assert m.sample(name, plugin="p1", domain="a.example.com", outcome="ok") == 1
    assert m.sample(name, plugin="p1", domain="bad.example.com", outcome="blocked") == 1
    assert m.sample(name, plugin="p1", domain="(unapproved)", outcome="not_approved") == 1
    assert b"modula_plugin_outbound_request_duration_seconds" in m.export()


def test_send_all_runs_concurrently_and_answers_in_order(server):
    # the server answers only once 8 requests are inside it at the same time
    server.recorder.barrier = threading.Barrier(8)
    r = Resolver({"a.example.com": "127.0.0.1"})
    c = client(r, allow_localhost=True)
    reqs = [c.prepare("GET", f"http://a.example.com:{server.port}/barrier?i={i}", {"parse_json": True})
            for i in range(8)]
    answers = c.send_all("p", reqs, anyone)
    assert [a["json"]["i"] for a in answers] == [str(i) for i in range(8)]
