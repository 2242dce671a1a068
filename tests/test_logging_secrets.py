"""`--debug` never turns on nextcord's debug lines (voice tokens, transport keys) unless asked."""

from __future__ import annotations

import logging

from assistant.app import setup_logging


def test_debug_keeps_nextcord_at_info_unless_debug_discord() -> None:
    nextcord_log = logging.getLogger("nextcord")
    saved = nextcord_log.level, logging.getLogger("assistant").level
    try:
        setup_logging(True)
        assert not nextcord_log.isEnabledFor(logging.DEBUG) and nextcord_log.isEnabledFor(logging.INFO)
        assert logging.getLogger("assistant").isEnabledFor(logging.DEBUG)
        nextcord_log.setLevel(logging.NOTSET)
        setup_logging(True, debug_discord=True)
        assert logging.getLogger("nextcord.gateway").isEnabledFor(logging.DEBUG)
    finally:
        nextcord_log.setLevel(saved[0])
        logging.getLogger("assistant").setLevel(saved[1])
