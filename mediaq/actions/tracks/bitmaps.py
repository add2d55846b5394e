"""Bitmap subtitles (DVD, Blu-ray PGS, DVB) carried as they are: no OCR and no
re-encoding, the source's packets copied onto the output's clock.

- ``keep``: a stream of the output, where its muxer takes the codec (:func:`carries`:
  Matroska takes all three, MP4 only ``dvd_subtitle``, WebM none)
- ``extract``: a sidecar beside the video, PGS as a ``.sup`` file (FFmpeg's ``sup``
  muxer), DVD and DVB as a subtitle-only Matroska file (``.mks``): PyAV's FFmpeg has no
  VobSub (.idx/.sub) muxer

The output stream is made from the source's stream (its codec parameters: the DVD
palette and frame size in the extradata, PGS/DVB as they are), so players colour and
place the pictures as the source's player would.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

import av

from mediaq.actions.avio import open_media, reading
from mediaq.actions.media_output import media_output
from mediaq.actions.tracks.subtitles import RawPacket, SubtitleTrack

# The sidecar each bitmap codec is extracted to: (file suffix, FFmpeg muxer).
SIDECAR_OF = {"hdmv_pgs_subtitle": ("sup", "sup"), "dvd_subtitle": ("mks", "matroska"),
              "dvb_subtitle": ("mks", "matroska")}


@functools.cache
def carries(muxer: str, codec: str) -> bool:
    """Whether the bundled FFmpeg's ``muxer`` takes ``codec`` streams (found by asking the
    muxer, as PyAV does before adding a stream: ``avformat_query_codec``)."""
    container: Any = av.open(io.BytesIO(), "w", format=muxer)
    try:
        container.add_mux_stream(codec)
    except ValueError:
        return False
    finally:
        container.close()
    return True


def carried_packets(track: SubtitleTrack, shift: float) -> list[RawPacket]:
    """The track's packets from ``shift`` seconds on (the output's first moment), moved
    ``shift`` earlier. A picture starting before it is left out: its packet holds its own
    display time, which a clamped start would lengthen."""
    carried = []
    for packet in track.packets:
        ticks = round(shift / packet.time_base)
        if packet.pts - ticks >= 0:
            carried.append(RawPacket(packet.pts - ticks, packet.duration, packet.time_base,
                                     packet.data))
    return carried


def _packet(stream: Any, raw: RawPacket) -> Any:
    packet = av.Packet(raw.data)
    packet.stream = stream
    packet.time_base = raw.time_base
    packet.pts = packet.dts = raw.pts
    if raw.duration:
        packet.duration = raw.duration
    return packet


def _stream_like(container: Any, track: SubtitleTrack) -> Any:
    """A stream of ``container`` with the codec parameters of the source's track."""
    assert track.source is not None
    with open_media(track.source) as source, reading(track.source):
        stream = container.add_stream_from_template(source.streams[track.index])
    stream.metadata["language"] = track.language
    return stream


class BitmapMuxer:
    """A bitmap track of one output: its packets muxed as the video passes their start."""

    def __init__(self, container: Any, track: SubtitleTrack, shift: float) -> None:
        self.stream = _stream_like(container, track)
        self.packets = carried_packets(track, shift)
        self.next = 0

    def due(self, until: float | None) -> list[Any]:
        """Packets starting before ``until`` seconds on the output's clock (None: all)."""
        packets = []
        while self.next < len(self.packets) and (until is None
                                                 or self.packets[self.next].seconds <= until):
            packets.append(_packet(self.stream, self.packets[self.next]))
            self.next += 1
        return packets


def write_sidecar(track: SubtitleTrack, path: Path, shift: float) -> int:
    """The track's packets as a ``.sup`` or ``.mks`` file at ``path`` (its suffix from
    :data:`SIDECAR_OF`), on the output's clock; the number of pictures written."""
    _, muxer = SIDECAR_OF[track.codec]
    packets = carried_packets(track, shift)
    with media_output(path, format=muxer) as output:
        stream = output.add_stream(functools.partial(_stream_like, track=track))
        output.mux([_packet(stream, p) for p in packets])
    return sum(1 for cue in track.cues if cue.bitmaps and cue.start >= shift)
