"""HOST:PORT, strictly: every address setting reads an address one way, or refuses it naming
the setting, the form expected and what is wrong."""

from __future__ import annotations

import pytest

from iomtnode.config import ConfigError, parse_hostport, resolve
from iomtnode.config.hostport import dial_problem, is_dialable, is_hostport
from iomtnode.p2p.transport import format_address, ip_of, split_address

# address -> (host, port) it reads as
GOOD = [
    ("127.0.0.1:7545", ("127.0.0.1", 7545)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),  # a listener: every interface, any port
    ("10.0.0.2:65535", ("10.0.0.2", 65535)),
    ("[::1]:7546", ("::1", 7546)),
    ("[::]:7546", ("::", 7546)),
    ("[2001:db8::7]:1", ("2001:db8::7", 1)),
    ("[::ffff:10.0.0.1]:1", ("::ffff:10.0.0.1", 1)),  # IPv4-mapped
    ("[fe80::1%eth0]:7546", ("fe80::1%eth0", 7546)),  # link-local, with its zone
    ("localhost:7545", ("localhost", 7545)),
    ("node1:7546", ("node1", 7546)),
    ("node_1:7546", ("node_1", 7546)),  # a compose service; the ceremony takes it too
    ("pod-0.iomtnode.hospital.svc.cluster.local:7546",
     ("pod-0.iomtnode.hospital.svc.cluster.local", 7546)),
    ("gw.example.:7546", ("gw.example.", 7546)),  # an absolute name
    ("xn--bcher-kva.example:7546", ("xn--bcher-kva.example", 7546)),  # bücher, as dialed
    ("3com.example:1", ("3com.example", 1)),  # a label may start with a digit
    ("a" * 63 + ".example:1", ("a" * 63 + ".example", 1)),
    ("h:00080", ("h", 80)),
]

# address -> what the error says is wrong with it
BAD = [
    ("[::1:7545", "an opening [ without its closing ]"),
    ("::1]:7545", "a bracket out of place"),
    ("[::1]]:7545", "the ] of an IPv6 address must be followed by :PORT"),
    ("[::1]7545", "the ] of an IPv6 address must be followed by :PORT"),
    ("[::1]", "the ] of an IPv6 address must be followed by :PORT"),
    ("a:b:7545", "the host 'a:b' holds a ':'"),
    ("::1:7545", "an IPv6 address must be in brackets"),
    ("2001:db8::7:7546", "an IPv6 address must be in brackets"),
    ("host:", "no port"),
    ("[::1]:", "no port"),
    ("[]:7545", "empty brackets name no host"),
    (":7545", "no host before the :PORT"),
    ("[1.2.3.4]:7545", "'1.2.3.4' in brackets is not an IPv6 address"),
    ("[::g]:7545", "'::g' in brackets is not an IPv6 address"),
    ("h:+1", "the port must be ASCII digits, got '+1'"),
    ("h:-1", "the port must be ASCII digits, got '-1'"),
    ("h:1_000", "the port must be ASCII digits"),
    ("h:0x10", "the port must be ASCII digits"),
    ("h:\u0663", "only printable ASCII"),  # an Arabic-Indic three: str.isdigit() says yes
    ("h:\uff17\uff15\uff14\uff16", "only printable ASCII"),  # full-width digits
    ("h:65536", "port 65536 is not 0 to 65535"),
    ("h:123456", "port 123456 is not 0 to 65535"),
    ("h:" + "9" * 5000, "is not 0 to 65535"),  # never handed to int() whole
    ("localhost", "no :PORT"),
    ("", "no :PORT"),
    ("my host:1", "without spaces"),
    (" h:1", "without spaces"),
    ("h:1 ", "without spaces"),
    ("h\t:1", "without spaces"),
    ("b\u00fccher.example:1", "only printable ASCII"),
    ("h\u200f.example:1", "only printable ASCII"),  # a right-to-left mark
    ("a..b:1", "'a..b' is neither an IPv4 address nor a DNS name"),
    ("-a:1", "neither an IPv4 address nor a DNS name"),
    ("a-:1", "neither an IPv4 address nor a DNS name"),
    (".a:1", "neither an IPv4 address nor a DNS name"),
    ("a/b:1", "neither an IPv4 address nor a DNS name"),
    ("user@h:1", "neither an IPv4 address nor a DNS name"),
    ("ws://h:1", "the host 'ws://h' holds a ':'"),
    ("a" * 64 + ".example:1", "neither an IPv4 address nor a DNS name"),
    (".".join(["a" * 50] * 5) + ":1", "neither an IPv4 address nor a DNS name"),  # 254 chars
    ("999.1.1.1:1", "'999.1.1.1' is not an IPv4 address"),
    ("1.2.3:1", "'1.2.3' is not an IPv4 address"),
    ("010.0.0.1:1", "'010.0.0.1' is not an IPv4 address"),
    ("1.2.3.4.:1", "is not an IPv4 address"),
]


@pytest.mark.parametrize(("address", "expected"), GOOD)
def test_good_addresses_read_one_way(address: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(address, "p2p_listen") == expected
    assert is_hostport(address)


@pytest.mark.parametrize(("address", "why"), BAD)
def test_bad_addresses_are_refused_with_the_setting_the_form_and_the_reason(
        address: str, why: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_hostport(address, "p2p_listen")
    message = str(refused.value)
    prefix = (f"p2p_listen must be HOST:PORT (HOST an IPv4 address, a DNS name, or an IPv6 "
              f"address in brackets as in [::1]:7546; PORT 0 to 65535), got {address!r}: ")
    assert message.startswith(prefix) and why in message[len(prefix):]
    assert not is_hostport(address) and not is_dialable(address)


@pytest.mark.parametrize(("address", "why"), [
    ("0.0.0.0:7546", "every interface"),
    ("[::]:7546", "every interface"),
    ("[0:0::0]:7546", "every interface"),  # the same wildcard, spelt otherwise
    ("10.0.0.2:0", "port 0 cannot be dialed"),
    ("node1.example:0", "port 0 cannot be dialed"),
])
def test_a_listener_address_is_not_one_to_dial(address: str, why: str) -> None:
    assert is_hostport(address)
    fault = dial_problem(address)
    assert fault is not None and why in fault


@pytest.mark.parametrize("key", ["api_listen", "p2p_listen", "metrics_listen"])
@pytest.mark.parametrize(("address", "why"), BAD[:12])
def test_each_listen_setting_refuses_a_malformed_address(key: str, address: str,
                                                         why: str) -> None:
    if key == "metrics_listen" and address == "":
        return  # empty: no metrics endpoint
    (issue,) = resolve(None, {key: address}, env={}).issues
    assert issue.key == key
    assert issue.message.startswith(f"{key} must be HOST:PORT (HOST an IPv4 address")
    assert f"got {address!r}: " in issue.message and why in issue.message


@pytest.mark.parametrize(("address", "why"), BAD[:12])
def test_dialed_settings_refuse_a_malformed_address_and_name_it(address: str, why: str) -> None:
    (issue,) = resolve(None, {"advertise_address": address or ":"}, env={}).issues
    assert issue.key == "advertise_address" and "that other nodes can dial" in issue.message
    (issue,) = resolve(None, {"bootnodes": ("node1:7546", address)}, env={}).issues
    assert issue.key == "bootnodes"
    assert issue.message.startswith("bootnodes must be a list of HOST:PORT that other nodes "
                                    "can dial")
    assert f": {address!r}: " in issue.message and why in issue.message


@pytest.mark.parametrize("address", [a for a, _ in GOOD if is_dialable(a)])
def test_good_addresses_are_taken_by_every_address_setting(address: str) -> None:
    for listener in ("api_listen", "p2p_listen", "metrics_listen"):  # one at a time: two
        listeners = {"api_listen": "127.0.0.1:0", "p2p_listen": "127.0.0.1:0"}  # on one
        resolved = resolve(None, {**listeners, listener: address,  # address are refused
                                  "advertise_address": address, "bootnodes": (address,)},
                           env={})
        assert resolved.issues == (), listener


@pytest.mark.parametrize(("ip", "port"), [("10.0.0.9", 5000), ("::1", 5000),
                                          ("fe80::1%eth0", 1), ("::ffff:10.0.0.1", 2)])
def test_what_a_listener_reports_of_a_peer_reads_back(ip: str, port: int) -> None:
    remote = format_address(ip, port)  # as the TCP listener hands a connection's remote
    assert split_address(remote) == (ip, port) and ip_of(remote) == ip


def test_a_dial_refuses_a_malformed_address_with_the_reason() -> None:
    with pytest.raises(ValueError, match="an IPv6 address must be in brackets"):
        split_address("::1:7546")
    with pytest.raises(ValueError, match="needs a port"):
        split_address("node1:0")
