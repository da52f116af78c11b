"""The Telegram door (python-telegram-bot 22): the only package that imports ``telegram``.

``door`` translates updates to the engine's ``Inbound`` and replies to messages, ``service``
builds and runs the PTB ``Application`` (polling or ``webhook``), ``ratelimit`` keeps within
Telegram's limits and waits out 429s, ``render`` does HTML and splitting, ``cli`` backs
``python -m bot run`` and ``backup-db``. The fake Bot API the tests and ``bench`` talk to is in
the test kit (``bot/testing/fakeapi/``). Nothing here holds conversation state: the engine does.
"""

import os as _os

# PTB 22 warns on every RetryAfter unless time periods are opted in to ``timedelta`` (the
# next major version's behaviour). The door reads them either way; opt in to keep logs clean
# and because a warning raised inside PTB's request wrapper would replace the RetryAfter.
_os.environ.setdefault("PTB_TIMEDELTA", "1")
