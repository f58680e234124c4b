"""What each dialect's create-call request must look like, strictly (api-contract.md).

Each validator returns (the first violation or None, the call's parts: user, number, contact).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import phonenumbers
from multidict import MultiMapping

CONVERSATIONS_FIELDS = {"from", "to", "type", "media"}
PARTY_FIELDS = {"id", "address", "addressType"}
CONVERSATIONS_SCOPE = "conversation:write"
# CreateCallRequest's fields, as api-contract.md §2 lists them (the SDK's models agree).
CREATE_CALL_FIELDS = frozenset(
    {
        "phoneNumber",
        "callerId",
        "callerIdName",
        "callFromQueueId",
        "callQueueId",
        "callUserId",
        "languageId",
        "uuiData",
        "externalContactId",
        "label",
        "priority",
        "attributes",
        "routingSkillsIds",
        "conversationIds",
        "participants",
    }
)
GENESYS_PERMISSIONS = frozenset({"conversation:call:add", "conversation:agentlessCall:add"})
ANALYTICS_PERMISSION = "analytics:conversationDetail:view"


class Parts(NamedTuple):
    user: str
    number: str
    contact: str | None


def conversations_call(body: Any) -> tuple[str | None, Parts | None]:
    """§1: {from: the agent as a user, to: [one phone party], type: outbound, media: audio}."""
    if not isinstance(body, dict):
        return "Request body must be a JSON object", None
    for name in body:
        if name not in CONVERSATIONS_FIELDS:
            return f"Field '{name}' is not valid for this endpoint", None
    for name in sorted(CONVERSATIONS_FIELDS - set(body)):
        return f"Field '{name}' is required", None
    sender, to = body["from"], body["to"]
    if not isinstance(sender, dict) or set(sender) != PARTY_FIELDS:
        return "Field 'from' must have exactly id, address and addressType", None
    if sender["addressType"] != "user":
        return "Field 'from.addressType' must be 'user' for a Personal Connection call", None
    if (
        not isinstance(to, list)
        or len(to) != 1
        or not isinstance(to[0], dict)
        or set(to[0]) != PARTY_FIELDS
    ):
        return "Field 'to' must be a list of one party with id, address and addressType", None
    if to[0]["addressType"] != "phone":
        return "Field 'to[0].addressType' must be 'phone'", None
    if not is_e164(to[0]["address"]):
        return "Field 'to[0].address' is not a valid E.164 number", None
    if body["type"] != "outbound":
        return "Field 'type' must be 'outbound'", None
    if body["media"] != "audio":
        return "Field 'media' must be 'audio'", None
    return None, Parts(str(sender["id"]), to[0]["address"], str(to[0]["id"]))


def genesys_call(user: str, body: Any) -> tuple[str | None, Parts | None]:
    """§2: a flat CreateCallRequest; unknown fields refused; attributes strings only."""
    if not isinstance(body, dict):
        return "Request body must be a JSON object", None
    for name in body:
        if name not in CREATE_CALL_FIELDS:
            return f"Unrecognized field '{name}' (not in CreateCallRequest)", None
    number = body.get("phoneNumber")
    if not is_e164(number):
        return "Field 'phoneNumber' is not a valid E.164 number", None
    attributes = body.get("attributes", {})
    if not isinstance(attributes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        return "Field 'attributes' must be a map of strings to strings", None
    for name in ("callerId", "callerIdName", "callFromQueueId"):
        if name in body and not isinstance(body[name], str):
            return f"Field '{name}' must be a string", None
    return None, Parts(user, str(number), attributes.get("followup_contact_id"))


# queuecallback's query parameters (§4). CXone knows more (priorityManagement, sequence, ...),
# but their values are not documented publicly, so followup must not send them: refused here.
CXONE_CALLBACK_PARAMETERS = ("phoneNumber", "skill", "targetAgent", "callerID", "callDelay")


class CxoneCallback(NamedTuple):
    number: str  # as sent
    skill: int
    agent: int
    caller_id: str | None
    call_delay: int | None


class CxoneProblem(NamedTuple):
    code: str  # CXone's error code (the body's "error")
    text: str  # its description (error_description, and the icStatusDescription header)


def cxone_callback(
    query: MultiMapping[str],
    *,
    skills: frozenset[int] | None,
    agents: frozenset[str] | None,
    phone_format: str = "e164",
    phone_region: str = "US",
) -> tuple[CxoneProblem | None, CxoneCallback | None]:
    """§4: POST .../queuecallback?phoneNumber=&skill=&targetAgent=[&callerID=][&callDelay=].
    query is a MultiDict (a parameter given twice is refused). targetAgent is required here:
    followup always targets an agent (CXone would queue an untargeted callback to the skill)."""
    for name in query:
        if name not in CXONE_CALLBACK_PARAMETERS:
            return CxoneProblem("InvalidParameter", f"Parameter '{name}' is not valid"), None
        if len(query.getall(name)) > 1:
            return CxoneProblem("InvalidParameter", f"Parameter '{name}' is given twice"), None
    number = query.get("phoneNumber")
    if not is_dialable(number, phone_format, phone_region):
        return CxoneProblem("InvalidParameter", "Phone Number is not valid."), None
    skill = cxone_id(query.get("skill"))
    if skill is None:
        return CxoneProblem("InvalidSkillId", "Invalid skill."), None
    if skills is not None and skill not in skills:
        return CxoneProblem("InvalidSkillId", "Skill is not valid."), None
    agent = cxone_id(query.get("targetAgent"))
    if agent is None or (agents is not None and str(agent) not in agents):
        return CxoneProblem("InvalidAgentId", "Invalid Agent Id"), None
    caller_id = query.get("callerID")
    if caller_id is not None and not caller_id.lstrip("+").isdigit():
        return CxoneProblem("InvalidParameter", "Caller ID is not valid."), None
    delay = query.get("callDelay")
    call_delay = cxone_id(delay) if delay != "0" else 0
    if delay is not None and (call_delay is None or call_delay > 59):
        return CxoneProblem("InvalidParameter", "callDelay must be 0 to 59 seconds."), None
    return None, CxoneCallback(str(number), skill, agent, caller_id, call_delay)


def cxone_id(value: Any) -> int | None:
    """A CXone id (skill, agent, contact): a positive integer, written in plain digits."""
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        return None
    if len(value) > 18 or value.startswith("0"):
        return None
    return int(value)


def is_dialable(value: Any, phone_format: str, region: str) -> bool:
    """The number in a tenant's dialling plan: e164 (+61298765432), digits (61298765432,
    E.164 without the +) or national (2125551234 for the region US)."""
    if not isinstance(value, str) or not value:
        return False
    if phone_format == "e164":
        return is_e164(value)
    if not value.isascii() or not value.isdigit():
        return False
    if phone_format == "digits":
        return is_e164(f"+{value}")
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number)


def is_e164(value: Any) -> bool:
    if not isinstance(value, str) or not value.startswith("+"):
        return False
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return False
    return (
        phonenumbers.is_valid_number(number)
        and phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == value
    )
