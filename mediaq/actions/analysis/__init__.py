"""Analysis actions: shot boundaries (``detect_scenes``) and offline speech to text
(``transcribe_audio``).

- :mod:`.scenes`: ``detect_scenes``
- :mod:`.transcribe`: ``transcribe_audio`` and the choice of engine
- :mod:`.pcm`: the audio the engines take
- :mod:`.sphinx_engine`, :mod:`.whisper_engine`: the two engines
- :mod:`.cues`: words to cues, WebVTT, SRT and text

Both stream their input, so memory stays flat however long it is. Scene detection
compares each decoded frame, shrunk to a thumbnail, with the one before it.
Transcription decodes the first audio stream to 16 kHz mono PCM and feeds it to
pocketsphinx (bundled US-English model) or, when a local model directory is
configured, to faster-whisper. Models are never downloaded at run time.
"""
