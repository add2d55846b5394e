"""One long video encoded as independent chunks, then stitched without re-encoding.

- :mod:`plan`: ``split_video`` reads the source's packet index (no decoding, no copy)
  and plans chunks of about ``chunk_seconds`` cut at keyframes, preferring keyframes
  the source's encoder put at scene cuts.
- :mod:`encode`: ``encode_chunk`` encodes exactly one chunk's frames (a ``for_each``
  item of the plan) with closed GOPs from an IDR frame; ``encode_audio_track`` encodes
  the whole soundtrack once, on the same clock.
- :mod:`stitch`: ``stitch_video`` concatenates the chunk bitstreams packet by packet,
  puts each chunk back at its place on the source's clock, muxes the audio, and checks
  the result (frame count, strictly increasing timestamps, one set of parameter sets).

Each chunk is its own task: a failed chunk is redone alone, the others are kept.
"""
