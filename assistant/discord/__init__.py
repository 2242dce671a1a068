"""The Discord front end: transport only, over the core (which never imports nextcord).

`bot.run_bot(config)` runs it; `bot.create_bot(services)` builds it for tests. Cogs live in
`cogs/` (one feature each); decisions are pure functions in `policy`, `paths`, `history`.
"""
