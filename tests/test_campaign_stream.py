"""How campaign events are grouped into messages for the watchers' Channels group."""

from __future__ import annotations

from campaigns import stream


def _result(host_id: int) -> dict:
    return {"type": "campaign.result", "result": {"id": host_id, "host_id": host_id}}


def test_runs_of_results_become_one_message_and_other_events_keep_their_place():
    ended = {"type": "campaign.ended", "status": "finished"}
    events = [(1, _result(1)), (1, _result(2)), (2, _result(3)), (1, _result(4)), (1, ended), (1, _result(5))]
    assert stream.messages(events) == [
        (1, {"type": "campaign.results", "results": [{"id": 1, "host_id": 1}, {"id": 2, "host_id": 2}]}),
        (2, {"type": "campaign.results", "results": [{"id": 3, "host_id": 3}]}),
        (1, {"type": "campaign.results", "results": [{"id": 4, "host_id": 4}]}),
        (1, ended),
        (1, {"type": "campaign.results", "results": [{"id": 5, "host_id": 5}]}),
    ]


def test_a_long_run_is_cut_into_messages_of_at_most_batch_results(monkeypatch):
    monkeypatch.setattr(stream, "BATCH_RESULTS", 2)
    sizes = [len(m["results"]) for _, m in stream.messages([(7, _result(i)) for i in range(5)])]
    assert sizes == [2, 2, 1]
    assert stream.messages([]) == []
