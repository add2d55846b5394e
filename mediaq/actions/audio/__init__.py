"""Audio actions on PyAV, one concern a module.

- :mod:`.source`: probing the source and decoding its first audio stream
- :mod:`.codecs`: output codecs, containers, bit rates, encoder capabilities
- :mod:`.inspect`: ``validate_audio``, ``extract_audio_metadata``
- :mod:`.encode`: encoding decoded audio into output files
- :mod:`.transcode`: ``transcode_audio`` (fusable), ``extract_audio``
- :mod:`.loudness`: EBU R128 measurement and gain stages
- :mod:`.normalize`: ``normalize_loudness``
- :mod:`.waveform`: ``generate_waveform``

Every action opens its input through :func:`avio.open_media` (local files, safe
demuxers, one-line errors) and streams it frame by frame, so memory stays flat however
long the recording is.
"""
