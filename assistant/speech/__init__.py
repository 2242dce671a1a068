"""The assistant's ears and voice: whisper.cpp recognition, Piper synthesis, sentence streaming.

Core code: no Discord imports. `service.SpeechService` is the one entry point the CLI and the
bot share; the other modules are its parts (recognizer, synth, sentences, convert, provision).
"""
