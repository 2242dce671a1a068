"""Live voice, transport-independent: RTP, transport and DAVE decryption, per-speaker audio,
voice activity, turn taking and latency records. Nothing here imports nextcord; the Discord
glue lives in `assistant.discord.voice_recv`.
"""
