"""The conversations contract's profile: no settings of its own, and it cannot say whether
an agent is busy or whether a call happened."""

from __future__ import annotations

from followup.config.platform_profile import Profile


class ConversationsProfile(Profile):
    title = "the conversations contract"


PROFILE = ConversationsProfile()
