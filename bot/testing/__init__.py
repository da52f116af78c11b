"""The test kit: what tests and ``python -m bot bench`` drive the bot with; the running bot
never imports it.

* ``fakeapi`` — a fake Telegram Bot API server on 127.0.0.1 (real python-telegram-bot talks
  HTTP to it), with fault injection and the group rate-limit policy;
* ``smtpd`` — a real SMTP server (aiosmtpd, a ``[dev]`` dependency) as the lab's inbox;
* ``bench`` — ``python -m bot bench``: start-up, matcher and engine; it calls
  ``bench_telegram`` (the whole door against the fake), ``bench_quotes`` (the outbox drain
  against a local SMTP server) and ``bench_agents`` (the agents' mirror under load).

It sits on top of the layers (it may import anything in ``bot``); nothing in ``bot`` outside
this package imports it, except ``python -m bot bench`` in ``bot/__main__.py``.
"""
