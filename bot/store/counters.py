"""Anonymous aggregate counters: what ``python -m bot stats`` and the agents' ``/stats`` show.

They are counted per local day in the turn's own transaction (``SQLiteStore.save_turn``) and
hold no conversation id, name or text, so erasing a person (``/forget``, the retention purge)
leaves the team's figures as they were. ``turn_counts`` decides what one turn adds:

  conversations     the conversation's first turn of the day (a conversation active on three
                    days counts three times in a week)
  match:<decision>  each user message the matcher judged (accept / suggest / reject)
  flow:<id>         a topic entered (the bot answered in a flow the conversation was not in)
  resolved          the bot reached common.resolved ("that fixed it")
  event:<name>      each event of the turn (human_requested, quote_sent, not_understood_twice...)
  escalation:<name> each escalation the agents' desk records (its notes, repeats suppressed,
                    with or without a group; also quote_failed from the outbox): /stats'
                    "escalated" (``SQLiteStore.add_entries``, via ``note_counts``)
  fixed:<flow>.<step>  the step after which the user said "fixed" (reached common.resolved):
                    step analytics, and resolution per flow (summed by flow)
  csat:<bot|agent>:<1-5>  a satisfaction rating (flows/feedback.yaml: after "fixed", or after
                    an agent handed back); csat:comment — a comment was added (its text is in
                    the conversation, erased with it; the counter only says one was given)
  takeover, takeover:<agent>, first_response_s / first_response_n, handle_s / handle_n
                    the agents' desk (``Registry.count``): takeovers (per agent's display
                    name), seconds from an escalation or unanswered message to the first agent
                    reply, seconds from takeover to hand-back
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

from bot.core.ports import Direction, Entry, State

NOT_TOPICS = ("", "main_menu", "common", "feedback")
RESOLVED = ("common", "resolved")
RATED = ("feedback", "comment")  # a rating given: the optional comment is asked next


def day_of(ts: float) -> str:
    """The local date of ``ts`` (the day a counter belongs to)."""
    return time.strftime("%Y-%m-%d", time.localtime(ts))


def turn_counts(
    previous: tuple[str, str, float] | None,
    state: State,
    entries: Sequence[Entry],
    events: Sequence[str],
    now: float,
) -> Counter[str]:
    """What one turn adds. ``previous``: the conversation's (flow, step, updated_at) before it."""
    counts: Counter[str] = Counter()
    # /forget erased the conversation within its turn: it was counted already, not a new one
    if (previous is None or day_of(previous[2]) != day_of(now)) and "forgotten" not in events:
        counts["conversations"] += 1
    before = (previous[0], previous[1]) if previous else ("", "")
    entered: set[str] = set()
    for e in entries:
        if e.direction is Direction.IN and e.decision:
            counts[f"match:{e.decision}"] += 1
        elif e.direction is Direction.OUT:
            if e.flow not in NOT_TOPICS and e.flow != before[0]:
                entered.add(e.flow)
            if (e.flow, e.step) == RESOLVED and before != RESOLVED:
                counts["resolved"] = 1
                if before[0] not in NOT_TOPICS:
                    counts[f"fixed:{before[0]}.{before[1]}"] = 1
            if (e.flow, e.step) == RATED and before != RATED and state.values.get("csat"):
                counts[f"csat:{state.values.get('csat_of') or 'bot'}:{state.values['csat']}"] = 1
    if before == RATED and state.ref != "feedback.comment" and state.values.get("csat_comment"):
        counts["csat:comment"] = 1
    for flow in entered:
        counts[f"flow:{flow}"] += 1
    for name in set(events):
        counts[f"event:{name}"] += 1
    return counts


def note_counts(entries: Sequence[Entry]) -> Counter[str]:
    """What transcript notes written outside a turn add: ``escalation:<event>`` per note."""
    return Counter(e.kind for e in entries if e.direction is Direction.NOTE and e.kind.startswith("escalation:"))
