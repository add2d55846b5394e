"""Derived-video actions, built on the shared pieces of :mod:`mediaq.actions.clip`.

- :mod:`.sprites`: ``generate_sprite_sheet`` (sheets of stills and a WebVTT track)
- :mod:`.preview`: ``make_preview`` (short excerpts as mp4, webp or gif)
- :mod:`.compile`: ``compile_videos`` (concat or a 2x2 grid)
"""
