"""Escalation: the data-recovery quote request and its durable delivery to the lab.

A feature behind the runtime's seam: ``service.Escalation`` is the feature object (passed to
``open_runtime``); ``form`` holds the quote flow's actions and commands; ``store`` the
quotes/outbox tables; ``worker`` the background outbox worker; ``transport`` SMTP and the
Maildir default; ``render`` the lab's e-mail; ``cli`` ``python -m bot outbox``.
See docs/quotes.md.
"""

from .ports import Alerter, ChatAlerter, FileFetcher, FileTooLarge, LabNotifier, LoggingAlerter
from .service import Escalation
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
]
