"""Who may call each method: every role is enforced in the dispatcher, before the method runs.

Parties: device D recording into stream S (a patient's pseudonym), authority A, and X, a
key the ledger relates to nothing.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from iomtnode.api.access import RELATIONS, Access, Role
from iomtnode.api.auth import FORBIDDEN
from iomtnode.api.jsonrpc import INVALID_PARAMS, UNAUTHORIZED, Dispatcher
from iomtnode.api.methods import ROLES
from iomtnode.core.ledger import Device

from ..core.sealkit import PROFILE
from .test_client_api import make_api

D, S, A, X = (bytes([i]) * 32 for i in (1, 2, 3, 4))
UNKNOWN = b"\x09" * 32  # no device with this key
TOKEN = "s3cret"


class Ledger:
    def authorities(self) -> tuple[bytes, ...]:
        return (A,)

    def device(self, key: bytes) -> tuple[Device, int] | None:
        return (Device(D, S, PROFILE, "active", 1, b""), 0) if key == D else None


class Conn:
    def __init__(self, *keys: bytes) -> None:
        self.proven_keys = frozenset(keys)


async def get_device(id: str) -> dict[str, Any]:
    return {"id": id}


async def status() -> str:
    return "ok"


async def admin_peers() -> list[str]:
    return []


def dispatcher(roles: dict[str, Role] | None = None) -> Dispatcher:
    methods, admin = {"get_device": get_device, "status": status}, {"admin_peers": admin_peers}
    roles = roles or {"get_device": Role.PARTY, "status": Role.PUBLIC, "admin_peers": Role.ADMIN}
    access = Access(roles, methods, admin, Ledger())
    return Dispatcher(methods, admin_methods=admin, admin_token=TOKEN, guard=access.check)


async def call(d: Dispatcher, conn: Conn | None, method: str, **params: Any) -> dict[str, Any]:
    request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    reply = await d.handle_text(json.dumps(request), conn=conn)
    assert reply is not None
    return json.loads(reply)


# (the connection's proven keys, the device asked for, answered?) for get_device (PARTY)
PARTY_CASES = [
    ((), D, False),         # nobody proven
    ((D,), D, True),        # the device itself
    ((S,), D, True),        # its stream
    ((A,), D, True),        # an authority
    ((X,), D, False),       # a key related to nothing
    ((X, S), D, True),      # one related key among others is enough
    ((S,), UNKNOWN, False),  # a stream is no party to another device ...
    ((X,), UNKNOWN, False),  # ... and a stranger learns no more of one that does not exist
    ((A,), UNKNOWN, True),   # an authority is told (and gets NOT_FOUND from the method)
    ((UNKNOWN,), UNKNOWN, True),  # a key may ask after its own registration
]


@pytest.mark.parametrize("keys, device, answered", PARTY_CASES)
async def test_party_methods_answer_only_a_party_to_the_data(keys, device, answered):
    reply = await call(dispatcher(), Conn(*keys), "get_device", id=device.hex())
    if answered:
        assert reply["result"] == {"id": device.hex()}
    else:
        assert reply["error"]["code"] == FORBIDDEN
        assert reply["error"]["data"] == {"role": "party", "proven_keys": len(keys)}


async def test_a_refusal_says_the_same_whether_or_not_the_device_exists():
    d = dispatcher()
    known = await call(d, Conn(X), "get_device", id=D.hex())
    unknown = await call(d, Conn(X), "get_device", id=UNKNOWN.hex())
    assert known["error"] == unknown["error"]


async def test_the_party_refusal_names_the_parties_the_rule_admits():
    # the parties are the device, its stream's key and the authorities (PARTY_CASES), as
    # docs/api.md says: the refusal must tell the caller which key to prove
    message = (await call(dispatcher(), Conn(X), "get_device", id=D.hex()))["error"]["message"]
    assert "(for a device: the device, its stream's key or an authority)" in message


async def test_a_party_check_with_params_that_name_nothing_is_invalid_params():
    reply = await call(dispatcher(), Conn(X), "get_device", id="zz")
    assert reply["error"]["code"] == INVALID_PARAMS


async def test_public_methods_answer_anyone():
    for conn in (None, Conn(), Conn(X)):
        assert (await call(dispatcher(), conn, "status"))["result"] == "ok"


async def test_admin_methods_need_the_token_not_a_key():
    d = dispatcher()
    assert (await call(d, Conn(A), "admin_peers"))["error"]["code"] == UNAUTHORIZED
    assert (await call(d, None, "admin_peers", token=TOKEN))["result"] == []


async def test_a_public_role_would_answer_anyone():
    # the rule above is what refuses: the same method made public answers a stranger
    d = dispatcher({"get_device": Role.PUBLIC, "status": Role.PUBLIC,
                    "admin_peers": Role.ADMIN})
    assert "result" in await call(d, Conn(X), "get_device", id=D.hex())


def test_every_method_states_who_may_call_it():
    api = make_api()
    assert set(api.methods()) | set(api.admin_methods()) == set(ROLES)
    assert {n for n, r in ROLES.items() if r is Role.PARTY} == {"get_device"}
    assert {n for n, r in ROLES.items() if r is Role.ADMIN} == set(api.admin_methods())
    assert api.access.role("get_device") is Role.PARTY
    assert set(RELATIONS) == {"get_device"}


@pytest.mark.parametrize("roles, methods, admin, message", [
    ({}, ["status"], [], "without a role"),
    ({"status": Role.ADMIN}, ["status"], [], "not in the admin table"),
    ({"admin_peers": Role.PUBLIC}, [], ["admin_peers"], "must have role admin"),
    ({"status": Role.PARTY}, ["status"], [], "no relation"),
])
def test_a_table_that_leaves_a_method_unstated_is_refused(roles, methods, admin, message):
    with pytest.raises(ValueError, match=message):
        Access(roles, methods, admin, Ledger())


async def test_the_client_api_refuses_an_unproven_caller_its_party_methods():
    api = make_api()
    d = Dispatcher(api.methods(), admin_methods=api.admin_methods(), guard=api.access.check)
    reply = await call(d, Conn(), "get_device", id=(b"\x05" * 32).hex())
    assert reply["error"]["code"] == FORBIDDEN
    assert "result" in await call(d, Conn(), "get_authorities")
