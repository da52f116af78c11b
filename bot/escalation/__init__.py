"""Escalation: the data-recovery quote request and its durable delivery to the lab.

Behind the engine's seam. ``form`` holds the quote flow's actions and commands (plugged in
by bot/plugins.py); ``store`` the quotes/outbox tables; ``worker`` the background outbox
worker; ``transport`` SMTP and the Maildir default; ``render`` the lab's e-mail; ``service``
the hub a door starts with ``attach_escalation``; ``cli`` ``python -m bot outbox``.
See docs/quotes.md.
"""

from .ports import Alerter, ChatAlerter, FileFetcher, FileTooLarge, LabNotifier, LoggingAlerter
from .service import Escalation, attach_escalation, escalation_for
from .worker import OutboxWorker, RetryPolicy

__all__ = [
    "Alerter",
    "ChatAlerter",
    "Escalation",
    "FileFetcher",
    "FileTooLarge",
    "LabNotifier",
    "LoggingAlerter",
    "OutboxWorker",
    "RetryPolicy",
    "attach_escalation",
    "escalation_for",
]
