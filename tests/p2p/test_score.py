"""Scoreboard: decay toward 0, the ban threshold, ban expiry (pure; time passed in)."""

from __future__ import annotations

import pytest

from iomtnode.p2p import score
from iomtnode.p2p.score import Scoreboard

A, B = b"A" * 32, b"B" * 32


def test_a_new_node_scores_zero_and_is_not_banned():
    board = Scoreboard()
    assert board.score(A, 0.0) == 0.0
    assert not board.is_banned(A, 0.0)


def test_penalties_add_up_and_decay_back_to_zero():
    board = Scoreboard(decay_per_s=1.0)
    assert not board.penalize(A, 30, "x", now=0.0)
    assert not board.penalize(A, 20, "x", now=0.0)
    assert board.score(A, 0.0) == -50.0
    assert board.score(A, 10.0) == -40.0  # 1 point per second back
    assert board.score(A, 1000.0) == 0.0  # never above 0
    assert board.score(B, 10.0) == 0.0  # scores are per node id
    assert board.penalties["x"] == 2


def test_falling_below_the_threshold_bans_for_ban_s():
    board = Scoreboard(ban_s=60.0, threshold=-100.0, decay_per_s=0.0)
    for _ in range(10):  # -100 is not below -100
        assert not board.penalize(A, score.UNDECODABLE_FRAME, "garbage", now=0.0)
    assert board.penalize(A, score.UNDECODABLE_FRAME, "garbage", now=1.0)
    assert board.is_banned(A, 1.0)
    assert board.is_banned(A, 60.9)
    assert not board.is_banned(A, 61.0)  # expired
    assert board.score(A, 61.0) == 0.0  # and starts again from 0
    assert not board.is_banned(B, 1.0)


def test_decay_forgives_a_slow_trickle_but_not_a_burst():
    slow = Scoreboard(threshold=-100.0, decay_per_s=1.0)
    # -10 every 20 s: recovered before the next one
    assert not any(slow.penalize(A, 10, "x", now=20.0 * i) for i in range(100))
    burst = Scoreboard(threshold=-100.0, decay_per_s=1.0)
    assert any(burst.penalize(A, 10, "x", now=0.1 * i) for i in range(20))


def test_a_banned_node_stays_banned_when_penalized_again():
    board = Scoreboard(ban_s=10.0)
    board.ban(A, 10.0, now=0.0)
    assert board.penalize(A, 1, "x", now=5.0)  # True: still banned, disconnect it
    assert not board.is_banned(A, 10.0)


def test_a_longer_existing_ban_is_kept_and_unban_lifts_it():
    board = Scoreboard()
    board.ban(A, 100.0, now=0.0)
    board.ban(A, 5.0, now=0.0)
    assert board.is_banned(A, 50.0)
    assert board.bans(50.0) == {A: 50.0}
    board.unban(A)
    assert not board.is_banned(A, 50.0)


def test_constants_rank_misbehaviour():
    assert score.UNREQUESTED < score.UNDECODABLE_FRAME < score.INVALID_MESSAGE
    assert score.INVALID_MESSAGE < score.BAD_SIGNATURE == score.INVALID_BLOCK


@pytest.mark.parametrize("points", [0, -5])
def test_a_penalty_must_be_positive(points):
    with pytest.raises(ValueError):
        Scoreboard().penalize(A, points, "x", now=0.0)


def test_tracked_nodes_are_bounded(monkeypatch):
    monkeypatch.setattr(score, "MAX_TRACKED", 10)
    board = Scoreboard(decay_per_s=0.0)
    for i in range(50):
        board.penalize(i.to_bytes(32, "big"), 1, "x", now=0.0)
        board.ban((1000 + i).to_bytes(32, "big"), 100.0 + i, now=0.0)
    assert len(board._scores) <= 10 and len(board._nodes.until) <= 10
    assert board.score((49).to_bytes(32, "big"), 0.0) == -1.0  # the newest are kept
    assert board.is_banned((1049).to_bytes(32, "big"), 0.0)  # the longest bans are kept


def test_a_ban_bans_the_address_too_and_a_new_key_from_it_is_refused():
    board = Scoreboard(ban_s=60.0, address_ban_s=30.0, decay_per_s=0.0)
    assert board.penalize(A, 200, "x", now=0.0, address="10.1.2.3")
    assert board.is_banned(A, 0.0) and board.is_address_banned("10.1.2.3", 0.0)
    assert not board.is_banned(B, 0.0)  # a new key is not banned as a key ...
    assert board.is_address_banned("10.1.2.3", 29.9)  # ... but its address is refused
    assert not board.is_address_banned("10.1.2.4", 0.0)
    assert board.address_bans(10.0) == {"10.1.2.3": 20.0}
    assert not board.is_address_banned("10.1.2.3", 30.0)


def test_address_bans_can_be_turned_off():
    board = Scoreboard(address_ban_s=0.0, decay_per_s=0.0)
    assert board.penalize(A, 200, "x", now=0.0, address="127.0.0.1")
    assert board.is_banned(A, 0.0) and not board.is_address_banned("127.0.0.1", 0.0)


def test_a_repeat_offender_is_banned_longer_each_time():
    board = Scoreboard(ban_s=10.0, address_ban_s=10.0, decay_per_s=0.0)
    now, lengths = 0.0, []
    for _ in range(5):
        assert board.penalize(A, 200, "x", now=now, address="10.0.0.1")
        lengths.append(board.banned_for(A, now))
        assert board.address_bans(now)["10.0.0.1"] == lengths[-1]
        now += lengths[-1]  # the ban ends; it offends again at once
        assert not board.is_banned(A, now)
    assert lengths == [10.0, 20.0, 40.0, 80.0, 160.0]
    capped = Scoreboard(ban_s=score.MAX_BAN_S / 2, decay_per_s=0.0)
    for i in range(3):
        capped.penalize(B, 200, "x", now=i * score.MAX_BAN_S)
    assert capped.banned_for(B, 2 * score.MAX_BAN_S) == score.MAX_BAN_S


def test_offences_are_forgotten_after_a_while():
    board = Scoreboard(ban_s=10.0, decay_per_s=0.0)
    board.penalize(A, 200, "x", now=0.0)
    later = 10.0 + score.OFFENCE_MEMORY_S + 1
    board.penalize(A, 200, "x", now=later)
    assert board.banned_for(A, later) == 10.0


def test_bans_are_counted_by_score_and_by_the_operator():
    board = Scoreboard(threshold=-100.0, decay_per_s=0.0)
    board.ban(A, 10.0, now=0.0)  # the operator's
    assert board.penalize(B, 200, "garbage", now=0.0)  # below the threshold: banned
    assert board.penalize(B, 1, "garbage", now=1.0)  # banned already: not counted again
    assert board.bans_issued == 2


def test_penalty_reasons_counted_apart_are_bounded():
    board = Scoreboard(threshold=-1e9, decay_per_s=0.0)
    kinds = [f"kind {chr(65 + i // 26)}{chr(65 + i % 26)}"
             for i in range(score.MAX_PENALTY_REASONS + 5)]
    for kind in kinds:
        board.penalize(A, 1, kind, now=0.0)
    board.penalize(A, 1, kinds[0], now=0.0)  # a kind counted apart stays so
    assert len(board.penalties) == score.MAX_PENALTY_REASONS + 1
    assert board.penalties[score.OTHER_REASON] == 5
    assert board.penalties[kinds[0]] == 2


@pytest.mark.parametrize(("reason", "counted"), [
    ("invalid_message", "invalid_message"),
    ("unexpected Txs", "unexpected Txs"),
    ("compact block 57", "compact block"),  # a height
    ("block 9f3ac2e1d0b4a7c6 is not its header's", "block is not its"),  # a hash
    ("1234", score.OTHER_REASON),
])
def test_a_penalty_reason_is_counted_without_its_numbers_and_ids(reason, counted):
    board = Scoreboard()
    board.penalize(A, 1, reason, now=0.0)
    assert dict(board.penalties) == {counted: 1}


def test_an_address_is_charged_apart_from_node_ids_and_banned_below_the_threshold():
    # before a handshake names a node, what a connection does costs its address
    board = Scoreboard(address_ban_s=60.0, decay_per_s=1.0)
    for _ in range(5):  # -100 is not below -100
        assert not board.penalize_address("10.0.0.9", score.INVALID_MESSAGE, "bad", now=0.0)
    assert board.address_score("10.0.0.9", 10.0) == -90.0  # decays as a node's score
    assert board.score(A, 0.0) == 0.0 and board.address_score("10.0.0.8", 0.0) == 0.0
    assert board.penalize_address("10.0.0.9", score.INVALID_MESSAGE, "bad", now=0.0)
    assert board.is_address_banned("10.0.0.9", 59.9) and board.address_banned_for("10.0.0.9",
                                                                                   0.0) == 60.0
    assert not board.is_address_banned("10.0.0.9", 60.0)
    assert board.address_score("10.0.0.9", 60.0) == 0.0  # starts again from 0
    assert board.bans(0.0) == {} and board.bans_issued == 0  # no node id was banned
    assert board.penalties["bad"] == 6


def test_with_address_bans_off_an_address_is_never_banned():
    board = Scoreboard(address_ban_s=0.0, decay_per_s=0.0)
    for _ in range(20):
        assert not board.penalize_address("10.0.0.9", score.INVALID_MESSAGE, "bad", now=0.0)
    assert board.address_bans(0.0) == {}
    with pytest.raises(ValueError, match="positive"):
        board.penalize_address("10.0.0.9", 0, "bad", now=0.0)


def test_an_ipv6_address_ban_covers_its_64():
    # whoever has one address of an IPv6 /64 has them all: a ban of one address alone was
    # evaded by the next address of the same /64, with a new key
    board = Scoreboard(address_ban_s=30.0, decay_per_s=0.0)
    assert board.penalize(A, 200, "x", now=0.0, address="2001:db8::2")
    for neighbour in ("2001:db8::3", "2001:db8::1234:0:0:9", "[2001:db8::2]"):
        assert board.is_address_banned(neighbour, 0.0)
    assert not board.is_address_banned("2001:db8:0:1::2", 0.0)  # the next /64 is not
    assert board.address_bans(10.0) == {"2001:db8::/64": 20.0}
    assert board.penalize(B, 200, "x", now=40.0, address="::ffff:10.1.2.3")  # IPv4-mapped
    assert board.is_address_banned("10.1.2.3", 40.0)
    assert not board.is_address_banned("10.1.2.4", 40.0)  # an IPv4 ban is one address


def test_an_ipv6_address_charged_before_its_handshake_is_charged_and_banned_as_its_64():
    board = Scoreboard(address_ban_s=60.0, decay_per_s=0.0)
    for i in range(5):  # five addresses of one /64 share one score
        assert not board.penalize_address(f"2001:db8::{i + 1}", score.INVALID_MESSAGE, "bad",
                                          now=0.0)
    assert board.address_score("2001:db8::99", 0.0) == -100.0
    assert board.penalize_address("[2001:db8::7]", score.INVALID_MESSAGE, "bad", now=0.0)
    assert board.is_address_banned("2001:db8::1234", 1.0)
    assert board.address_banned_for("2001:db8::5", 0.0) == 60.0
    assert not board.is_address_banned("2001:db8:0:1::1", 1.0)
