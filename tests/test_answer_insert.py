"""A live-query answer's prepared INSERT writes the row the ORM would (campaigns/answer_insert.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from campaigns.answer_insert import insert_result
from campaigns.models import Campaign, CampaignResult, ResultState

pytestmark = pytest.mark.django_db

ROWS = [{"name": "Zoë's Mac", "note": 'quote " and \\ backslash', "empty": ""}, {"name": "日本語"}]
COLUMNS = ("campaign_id", "host_id", "hostname", "state", "rows", "row_count", "error")


@pytest.fixture
def campaign():
    return Campaign.objects.create(sql="SELECT * FROM os_version")


def _stored(pk: int) -> tuple:
    """The row as a plain SELECT reads it back, through the ORM's own conversions."""
    return CampaignResult.objects.filter(pk=pk).values_list(*COLUMNS).get()


def test_the_row_equals_the_one_the_orm_writes(campaign):
    before = timezone.now()
    fast = insert_result(campaign.id, 7, "host-7", ResultState.ROWS, ROWS, 3, "")
    orm = CampaignResult.objects.create(
        campaign=campaign, host_id=8, hostname="host-7", state=ResultState.ROWS, rows=ROWS, row_count=3
    )
    assert _stored(fast.pk)[2:] == _stored(orm.pk)[2:]
    assert _stored(fast.pk)[:2] == (campaign.id, 7)
    assert CampaignResult.objects.get(pk=fast.pk).rows == ROWS
    received = CampaignResult.objects.get(pk=fast.pk).received_at
    assert before - timedelta(seconds=1) <= received <= timezone.now() + timedelta(seconds=1)


def test_the_returned_instance_is_the_saved_row(campaign):
    result = insert_result(campaign.id, 1, "h1", ResultState.FAILED, [], 0, "no such table: nope")
    assert result.pk is not None and not result._state.adding
    stored = CampaignResult.objects.get(pk=result.pk)
    assert (stored.state, stored.error, stored.rows, stored.hostname) == (
        ResultState.FAILED, "no such table: nope", [], "h1",
    )  # fmt: skip
    # Saving the returned instance updates that row; it does not insert a second one.
    result.hostname = "renamed"
    result.save(update_fields=["hostname"])
    assert CampaignResult.objects.filter(campaign=campaign).count() == 1
    assert CampaignResult.objects.get(pk=result.pk).hostname == "renamed"


def test_ids_follow_one_another(campaign):
    first = insert_result(campaign.id, 1, "a", ResultState.NO_ROWS, [], 0, "")
    second = insert_result(campaign.id, 2, "b", ResultState.NO_ROWS, [], 0, "")
    assert second.pk > first.pk
    assert set(CampaignResult.objects.values_list("pk", flat=True)) == {first.pk, second.pk}


def test_a_second_answer_from_a_host_is_refused_and_the_first_kept(campaign):
    insert_result(campaign.id, 5, "h5", ResultState.ROWS, [{"a": "1"}], 1, "")
    with pytest.raises(IntegrityError), transaction.atomic():
        insert_result(campaign.id, 5, "h5", ResultState.ROWS, [{"a": "2"}], 1, "")
    assert list(CampaignResult.objects.filter(host_id=5).values_list("rows", flat=True)) == [[{"a": "1"}]]
    # The connection is still usable after the refusal (a savepoint rolled it back).
    assert connection.cursor() is not None
    assert CampaignResult.objects.count() == 1
