"""Streaming actions: HLS and DASH rendition ladders from one decoding pass.

- :mod:`.ladder`: the rungs of a ladder and the segment grid
- :mod:`.segmenter`: one decoding pass cut into CMAF tracks
- :mod:`.hls`: ``package_hls`` and its master playlist
- :mod:`.dash`: ``package_dash`` and its MPD

``package_hls`` and ``package_dash`` decode the source once and encode every rung of a
rendition ladder from that one pass. Each track (every video rung, and the audio once)
goes through FFmpeg's hls muxer as a CMAF segmenter: fMP4 init + numbered ``.m4s``
segments cut at keyframes that are forced on the segment grid. The master playlist and
the MPD are written here, from the segments actually produced (measured bit rates, the
exact codec strings from each init segment). The dash muxer is not used because it
cannot see the sample aspect ratio PyAV gives each rung, so it refuses a ladder whose
even-rounded sizes differ in shape by a pixel (e.g. 426x240 beside 640x360).

Everything lands flat in the step's staging folder, named ``{stem}_{hls|dash}_{rung}…``,
and every file is listed as an output (the engine publishes only listed files).

Frames to encode are turned upright (rotation), deinterlaced and resampled to a constant
frame rate before scaling, so outputs play the right way up at a steady rate everywhere.
Scaling keeps one swscale context per output size
(:class:`~mediaq.actions.frames.Scaler`), four times cheaper than ``frame.reformat()``.
"""
