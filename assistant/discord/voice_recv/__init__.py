"""Voice receive for nextcord 3.2: hear people in a voice channel, DAVE included.

Usage from a voice cog::

    from assistant.discord.voice_recv import ListeningVoiceClient, VoiceListener
    from assistant.voice.turns import Event

    vc = await channel.connect(cls=ListeningVoiceClient)
    await channel.send("I am listening in this voice channel; `leave` stops me.")  # consent notice
    listener = VoiceListener(vc, on_event, config.voice)   # on_event(SpeechEvent) runs on the loop
    listener.start()
    ...
    listener.stop()            # `leave`: stops reading and drops buffered audio at once
    await vc.disconnect()

`on_event` receives `assistant.voice.receiver.SpeechEvent(user_id, kind, at, speech_start,
speech_end, audio)`; `kind` is an `assistant.voice.turns.Event`:

- STARTED: someone began speaking (decide barge-in with `turns.should_barge_in`, then
  `vc.stop()` to cut playback);
- PAUSED: `voice.speculate_after_ms` of trailing silence; `audio` (16 kHz mono float32) is the utterance so far:
  start recognising (and generating) speculatively;
- RESUMED: they went on: discard that speculative work;
- ENDED: `voice.silence_ms` of silence; `audio` is the whole utterance. If a speculative
  result exists for the same `speech_end`, use it.

Before playing, `await vc.wait_until_can_encrypt()`: under DAVE, frames sent before the key
arrives are dropped by every other client. `listener.stats` counts dropped packets.
`ListeningVoiceClient` offers `aead_aes256_gcm_rtpsize` (Discord's first choice) and
`aead_xchacha20_poly1305_rtpsize`.
"""

from assistant.discord.voice_recv.client import ListeningVoiceClient
from assistant.discord.voice_recv.listener import VoiceListener

__all__ = ["ListeningVoiceClient", "VoiceListener"]
