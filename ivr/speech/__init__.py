"""Speech helpers with no foreign threads: grammar building, result parsing, rejection, test audio.

The Vosk adapter itself lives in :mod:`ivr.adapters.speech`; voice activity in :mod:`ivr.proto.vad`.
"""
