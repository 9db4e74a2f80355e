"""``/ws/campaigns/<id>/``: watch a campaign's results arrive.

Messages are ``{"type": ..., "data": ...}`` as in Fleet: ``result``, ``totals``, ``status`` and
``error``. A watcher that joins late first gets every stored answer, then the live stream: it
joins the campaign's group *before* reading the stored answers, and Channels hands it group
messages only after that read is done, so nothing is missed; answers already sent from the
stored set are skipped when they come again live, so nothing is doubled.
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from campaigns import services, stream
from campaigns.models import Campaign, CampaignResult, CampaignStatus, ResultState
from fleet.ws_auth import user_for_token

AUTH_TIMEOUT = 10.0  # seconds to send an ``auth`` message when the handshake carried no login


class _Counts:
    """Live per-host counts, kept by each watcher from the answers it has sent."""

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self.offline_left = set(campaign.offline_host_ids)
        self.by_state = {state: 0 for state in ResultState.values}
        self.answered: set[int] = set()

    def add(self, result: dict[str, Any]) -> bool:
        host_id = result["host_id"]
        if host_id in self.answered:
            return False
        self.answered.add(host_id)
        self.offline_left.discard(host_id)
        self.by_state[result["state"]] = self.by_state.get(result["state"], 0) + 1
        if self.campaign.status == CampaignStatus.WAITING:
            # The first answer makes the campaign running (services.record_answer writes the same).
            self.campaign.status = CampaignStatus.RUNNING
        return True

    def breakdown(self) -> dict[str, int]:
        offline = len(self.offline_left)
        return {
            "rows": self.by_state[ResultState.ROWS],
            "no_rows": self.by_state[ResultState.NO_ROWS],
            "failed": self.by_state[ResultState.FAILED],
            "pending": max(0, self.campaign.targeted_count - len(self.answered) - offline),
            "offline": offline,
        }


class CampaignConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.campaign_id: int = self.scope["url_route"]["kwargs"]["campaign_id"]
        self.counts: _Counts | None = None
        self._auth_timer: asyncio.TimerHandle | None = None
        await self.accept()
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            await self._subscribe(user)
        else:
            loop = asyncio.get_running_loop()
            self._auth_timer = loop.call_later(AUTH_TIMEOUT, lambda: asyncio.ensure_future(self._auth_late()))

    async def disconnect(self, code: int) -> None:
        if self._auth_timer:
            self._auth_timer.cancel()
        if self.counts is not None:
            await self.channel_layer.group_discard(stream.group_name(self.campaign_id), self.channel_name)

    async def _auth_late(self) -> None:
        if self.counts is None:
            await self._fail('authentication required: send {"type": "auth", "data": {"token": ...}}', 4001)

    async def _fail(self, message: str, code: int) -> None:
        await self.send_json({"type": "error", "data": message})
        await self.close(code=code)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            await self.send_json({"type": "error", "data": "messages must be JSON objects"})
            return
        kind, data = content.get("type"), content.get("data")
        if kind == "auth":
            if self.counts is not None:
                return  # already watching
            token = data.get("token") if isinstance(data, dict) else None
            user = await user_for_token(token)
            if user is None:
                await self._fail("invalid token", 4001)
                return
            if self._auth_timer:
                self._auth_timer.cancel()
            await self._subscribe(user)
        elif kind == "select_campaign":  # Fleet's clients name the campaign again; the URL decides
            return
        else:
            await self.send_json({"type": "error", "data": f"unknown message type {kind!r}"})

    async def _subscribe(self, user: Any) -> None:
        campaign = await database_sync_to_async(Campaign.objects.filter(pk=self.campaign_id).first)()
        if campaign is None:
            await self._fail(f"cannot find campaign for ID {self.campaign_id}", 4004)
            return
        if not await database_sync_to_async(services.may_watch)(user, campaign):
            await self._fail("forbidden: only the campaign's creator and admins may watch it", 4003)
            return
        await self.channel_layer.group_add(stream.group_name(self.campaign_id), self.channel_name)
        # The campaign before its answers: a campaign read as finished has every answer stored, so
        # the status below never says "finished" ahead of an answer still to come (the last answer
        # can land between the two reads); one read as running is ended later by a group event.
        campaign = await database_sync_to_async(Campaign.objects.get)(pk=self.campaign_id)
        stored = await database_sync_to_async(self._stored_answers)()
        self.counts = _Counts(campaign)
        await self.send_json({"type": "totals", "data": services.totals(campaign)})
        for result in stored:
            if self.counts.add(result):
                await self.send_json({"type": "result", "data": result})
        await self._send_status()

    def _stored_answers(self) -> list[dict[str, Any]]:
        results = CampaignResult.objects.filter(campaign_id=self.campaign_id).order_by("id")
        return [services.result_message(r) for r in results.iterator(chunk_size=1000)]

    async def _send_status(self) -> None:
        assert self.counts is not None
        summary = services.status_summary(self.counts.campaign, self.counts.breakdown())
        await self.send_json({"type": "status", "data": summary})

    # --- group events (from campaigns.stream.publish) ---------------------------------------------
    async def campaign_result(self, event: dict[str, Any]) -> None:
        """One answer (the embedded default's in-memory layer sends them one by one)."""
        await self.campaign_results({"results": [event["result"]]})

    async def campaign_results(self, event: dict[str, Any]) -> None:
        """A batch of answers (``stream.messages``): each as its own ``result``, then one status."""
        if self.counts is None:
            return
        sent = False
        for result in event["results"]:
            if self.counts.add(result):
                await self.send_json({"type": "result", "data": result})
                sent = True
        if sent:
            await self._send_status()

    async def campaign_ended(self, event: dict[str, Any]) -> None:
        if self.counts is None:
            return
        self.counts.campaign.status = event["status"]
        await self._send_status()
