"""Where bots run and which addresses they gather on (agent.load.placement): the rules alone,
and one load spread over two processes."""

from __future__ import annotations

import pytest
from turnserver import relayed_backend

from agent.load.config import LoadConfig, plan_meetings, relay_share
from agent.load.placement import ice_addresses, interleave, lines, nodes, place, spans_hosts
from agent.load.records import BotRecord
from agent.load.runner import Target, run_load


def plans(meetings: int, participants: int):
    config = LoadConfig(meetings=meetings, participants=participants)
    ids = [f"m{i}" for i in range(meetings)]
    return plan_meetings(config, "http://127.0.0.1:1", ids, ["t"] * config.bots)


def test_spread_deals_a_meetings_bots_over_the_workers_and_keeps_its_size():
    shares = place(plans(2, 4), 2, "spread")
    assert [[[b.index for b in p.bots] for p in share] for share in shares] == [
        [[0, 2], [4, 6]],
        [[1, 3], [5, 7]],
    ]
    assert {p.participants for share in shares for p in share} == {4}
    packed = place(plans(2, 4), 2, "pack")
    assert [[p.index for p in share] for share in packed] == [[0], [1]]
    assert all(p.participants == 4 for share in packed for p in share)


def test_workers_take_the_nodes_in_turn():
    assert interleave({"a": 2, "b": 1}) == ["a", "b", "a"]
    assert interleave({"a": 1}) == ["a"]


def test_per_node_figures_name_a_node_and_its_failures():
    def record(bot: int, meeting: int, worker: str, ok: bool = True) -> BotRecord:
        r = BotRecord(bot=bot, meeting=meeting, meeting_id=f"m{meeting}", worker=worker, ok=ok)
        if not ok:
            r.failure_phase, r.failure_code = "room_initialized", "TransportError"
        return r

    records = [
        record(0, 0, "hosta:1"),
        record(1, 0, "hostb:2", ok=False),
        record(2, 1, "hosta:1"),
        record(3, 1, "hosta:3"),
    ]
    summary = nodes(records)
    assert summary["meetings"] == 2 and summary["meetings_spanning_nodes"] == 1
    assert summary["nodes"]["hosta"] == {"bots": 3, "ok": 3, "failures": {}}
    assert summary["nodes"]["hostb"]["failures"] == {"room_initialized:TransportError": 1}
    text = "\n".join(lines({"placement": summary}))
    assert "1 of 2 meetings spanned nodes" in text
    assert "hostb: 1 bots, ok 0, failed: room_initialized:TransportError 1" in text


def test_ice_defaults_to_loopback_unless_the_run_spans_hosts():
    assert not spans_hosts("http://127.0.0.1:8787") and not spans_hosts("http://localhost:1")
    assert spans_hosts("https://connvo.example") and spans_hosts("http://198.18.0.1:80")
    assert ice_addresses("default", ("127.0.0.1",), None) == (("127.0.0.1",), None)
    addresses, note = ice_addresses("default", ("127.0.0.1",), "Ray has 2 nodes")
    assert addresses is None and note and "Ray has 2 nodes" in note
    assert ice_addresses("loopback", None, "Ray has 2 nodes") == (("127.0.0.1",), None)
    assert ice_addresses(("198.18.0.1",), None, None) == (("198.18.0.1",), None)


def test_a_relay_share_is_spread_evenly():
    assert relay_share(8, 25) == {3, 7}
    assert relay_share(4, 100) == {0, 1, 2, 3} and relay_share(4, 0) == set()


@pytest.mark.slow
def test_a_spread_load_over_two_processes_succeeds():
    config = LoadConfig(meetings=1, participants=4, duration=1, media="audio", placement="spread")
    result = run_load(config, workers=2, quiet=True)
    assert all(r.ok for r in result.records), [r.failure_code for r in result.records]
    workers = {r.worker for r in result.records}
    assert len(workers) == 2
    assert result.summary["placement"]["meetings"] == 1


@pytest.mark.turn
def test_a_relay_share_goes_through_the_deployments_turn_server(tmp_path):
    # Bot 1 of 2 may use relays only: the meeting still connects, so through coturn (without
    # one, the same bot fails in ice_connected: test_load).
    with relayed_backend(tmp_path) as (_turn, server):
        tokens = tuple(server.token(f"relay-bot{i}") for i in range(2))
        target = Target(server.url, server.token("relay-host"), tokens)
        config = LoadConfig(participants=2, duration=0.5, relay_only_bots=relay_share(2, 50))
        result = run_load(config, target=target, workers=0, quiet=True)
        assert config.relay_only_bots == {1}
        assert all(r.ok for r in result.records), [r.failure_code for r in result.records]
