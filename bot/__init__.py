"""iPhone backup troubleshooting bot: one engine (bot.core), thin doors (terminal, Telegram)."""
