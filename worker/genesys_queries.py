"""What Genesys Cloud can tell us besides placing calls (api-contract.md §2): whether an
agent is on a call now, and whether a call exists that we could not hear about.

- Availability: GET /api/v2/users/{userId}?expand=conversationSummary; calls in progress
  are conversationSummary.call.contactCenter.active.
- The call: POST /api/v2/analytics/conversations/details/query for the agent's outbound
  voice conversations over an interval around the send; a match dialled the same number
  (`dnis`, tel:+E164) and started near the send marker. Analytics can lag by minutes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from followup.worker.http import PlatformHttp

# A conversation started this near the send marker is the one we sent.
STARTED_BEFORE = timedelta(seconds=60)
STARTED_AFTER = timedelta(seconds=300)
ANALYTICS_PERMISSION = "analytics:conversationDetail:view"


class LookupForbidden(Exception):
    """The OAuth client may not read analytics (it lacks ANALYTICS_PERMISSION)."""


class LookupFailed(Exception):
    """The lookup got no usable answer (a timeout, a 5xx, a body we cannot read)."""


class GenesysQueries:
    def __init__(self, http: PlatformHttp, api_base_url: str) -> None:
        self._http = http
        self._base = api_base_url

    def agent_busy(self, user_id: str, token: str) -> bool | None:
        """True if the agent has a call in progress; None if the platform could not say."""
        url = f"{self._base}/api/v2/users/{quote(user_id, safe='')}"
        try:
            answer = self._http.request(
                "GET",
                url,
                endpoint="availability",
                params={"expand": "conversationSummary"},
                headers={"Authorization": f"Bearer {token}"},
            )
            if answer.status != 200:
                return None
            body = json.loads(answer.body)
            active = body["conversationSummary"]["call"]["contactCenter"]["active"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None
        return bool(isinstance(active, int) and active > 0)

    def find_call(self, user_id: str, number: str, sent_at: float, token: str) -> str | None:
        """The conversation id of the call we sent, if analytics has it; raises
        LookupForbidden or LookupFailed."""
        sent = datetime.fromtimestamp(sent_at, UTC)
        interval = f"{_iso(sent - STARTED_BEFORE)}/{_iso(sent + STARTED_AFTER)}"
        query = {
            "interval": interval,
            "order": "asc",
            "orderBy": "conversationStart",
            "paging": {"pageSize": 100, "pageNumber": 1},
            "segmentFilters": [
                {
                    "type": "and",
                    "predicates": [
                        {"dimension": "userId", "value": user_id},
                        {"dimension": "direction", "value": "outbound"},
                        {"dimension": "mediaType", "value": "voice"},
                    ],
                }
            ],
        }
        try:
            answer = self._http.request(
                "POST",
                f"{self._base}/api/v2/analytics/conversations/details/query",
                endpoint="analytics",
                json=query,
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            raise LookupFailed(type(exc).__name__) from None
        if answer.status == 403:
            raise LookupForbidden(ANALYTICS_PERMISSION)
        if answer.status != 200:
            raise LookupFailed(f"HTTP {answer.status}")
        try:
            conversations = json.loads(answer.body).get("conversations") or []
        except (ValueError, AttributeError):
            raise LookupFailed("an answer that is not the query's JSON") from None
        return next((c["conversationId"] for c in conversations if _ours(c, user_id, number)), None)


def _ours(conversation: Any, user_id: str, number: str) -> bool:
    """The same agent dialled the same number in it."""
    if not isinstance(conversation, dict) or not isinstance(
        conversation.get("conversationId"), str
    ):
        return False
    participants = conversation.get("participants") or []
    users = {p.get("userId") for p in participants if isinstance(p, dict)}
    dialled = {
        s.get("dnis")
        for p in participants
        if isinstance(p, dict)
        for s in p.get("sessions") or []
        if isinstance(s, dict)
    }
    return user_id in users and f"tel:{number}" in dialled


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
