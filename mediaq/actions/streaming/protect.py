"""Encryption of CMAF tracks: HLS AES-128 (whole segments, rotating keys) and DASH
Common Encryption (``cenc``, AES-CTR) with a ClearKey licence for testing.

AES-128 encrypts each media segment file with AES-CBC and PKCS#7 padding (RFC 8216
5.2); the init segment stays clear (its EXT-X-MAP comes before the first EXT-X-KEY).
Keys rotate every ``rotation`` segments, the same key periods on every track, each
segment with an explicit IV (its media sequence number). CENC encrypts samples inside
the fMP4 boxes; it is done by remuxing the clear track (no re-encode) through FFmpeg's
mp4 muxer, which writes the ``senc``/``saiz``/``saio`` boxes and the protected sample
entry. The two cannot share files, so an encrypted package keeps each format's copies.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import av
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mediaq.actions.avio import writing
from mediaq.actions.base import ActionContext
from mediaq.actions.media_output import media_outputs
from mediaq.actions.streaming.segmenter import TrackFiles, read_media_playlist

CLEARKEY_SYSTEM = "e2719d58-a985-b3c9-781a-b030af78d30e"  # W3C ClearKey's system id


@dataclass(frozen=True)
class HlsKey:
    """One key period: the key, the file it is written to, the URI players fetch."""

    index: int
    key: bytes
    path: Path
    uri: str


def make_hls_keys(ctx: ActionContext, prefix: str, segments: int, rotation: int,
                  key_uri: str) -> list[HlsKey]:
    """One key per ``rotation`` segments (0: one key for all), written to key files."""
    periods = 1 if rotation <= 0 else -(-segments // rotation)
    keys = []
    for index in range(periods):
        path = ctx.output_path(f"{prefix}key_{index:03d}.key")
        key = secrets.token_bytes(16)
        with writing(path):
            path.write_bytes(key)
        keys.append(HlsKey(index, key, path, f"{key_uri}{path.name}"))
    return keys


def key_for(keys: list[HlsKey], sequence: int, rotation: int) -> HlsKey:
    """The key of segment number ``sequence`` (1-based)."""
    return keys[0] if rotation <= 0 else keys[(sequence - 1) // rotation]


def sequence_iv(sequence: int) -> bytes:
    return sequence.to_bytes(16, "big")


def aes128_encrypt_segments(track: TrackFiles, keys: list[HlsKey],
                            rotation: int) -> list[tuple[Path, float]]:
    """Encrypted copies (``…_00001.aes.m4s``) of the track's segments."""
    encrypted: list[tuple[Path, float]] = []
    for sequence, (path, seconds) in enumerate(track.segments, start=1):
        key = key_for(keys, sequence, rotation)
        padder = padding.PKCS7(128).padder()
        plain = padder.update(path.read_bytes()) + padder.finalize()
        cipher = Cipher(algorithms.AES(key.key), modes.CBC(sequence_iv(sequence))).encryptor()
        target = path.with_suffix(".aes.m4s")
        with writing(target):
            target.write_bytes(cipher.update(plain) + cipher.finalize())
        encrypted.append((target, seconds))
    return encrypted


def hls_media_playlist(track: TrackFiles, segments: list[tuple[Path, float]],
                       keys: list[HlsKey] | None, rotation: int) -> str:
    """A VOD media playlist of ``segments``; with ``keys``, an EXT-X-KEY at each key
    period's first segment (after EXT-X-MAP, so the init segment stays clear)."""
    target = max(round(seconds + 0.5) for _, seconds in segments)
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{max(target, 1)}",
             "#EXT-X-MEDIA-SEQUENCE:1", "#EXT-X-PLAYLIST-TYPE:VOD",
             "#EXT-X-INDEPENDENT-SEGMENTS", f'#EXT-X-MAP:URI="{track.init.name}"']
    current: int | None = None
    for sequence, (path, seconds) in enumerate(segments, start=1):
        if keys:
            key = key_for(keys, sequence, rotation)
            if key.index != current:
                # No IV attribute: each segment's IV is then its media sequence number
                # (RFC 8216 5.2), which is what aes128_encrypt_segments used.
                lines.append(f'#EXT-X-KEY:METHOD=AES-128,URI="{key.uri}"')
                current = key.index
        lines += [f"#EXTINF:{seconds:.6f},", path.name]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ClearKey:
    kid: bytes
    key: bytes

    @property
    def kid_uuid(self) -> str:
        h = self.kid.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def licence(self) -> str:
        """A ClearKey licence (the JSON Web Key set a licence server answers with)."""
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).decode().rstrip("=")
        return json.dumps({"keys": [{"kty": "oct", "kid": b64(self.kid),
                                     "k": b64(self.key)}], "type": "temporary"})


def new_clear_key() -> ClearKey:
    return ClearKey(kid=secrets.token_bytes(16), key=secrets.token_bytes(16))


def cenc_copy(ctx: ActionContext, track: TrackFiles, key: ClearKey, seconds: int,
              prefix: str) -> TrackFiles:
    """The track remuxed (not re-encoded) with CENC AES-CTR encryption, as its own init
    and segments (``{prefix}{label}_cenc…``), cut where the clear ones are."""
    name = f"{prefix}{track.label}_cenc"
    playlist = ctx.output_path(f"{name}.m3u8")
    pattern = str(playlist.parent).replace("%", "%%") + f"/{name}_%05d.m4s"
    segment_options = [f"encryption_scheme=cenc-aes-ctr:encryption_key={key.key.hex()}:"
                       f"encryption_kid={key.kid.hex()}"]
    if track.start > 0:
        segment_options.insert(0, "movflags=+frag_discont")
    options = {
        "hls_time": str(seconds), "hls_segment_type": "fmp4", "hls_playlist_type": "vod",
        "hls_list_size": "0", "start_number": "1", "hls_segment_filename": pattern,
        "hls_fmp4_init_filename": f"{name}_init.mp4", "avoid_negative_ts": "disabled",
        "hls_segment_options": ":".join(segment_options),
    }
    clear = track.init.read_bytes() + b"".join(p.read_bytes() for p, _ in track.segments)
    source: Any = av.open(io.BytesIO(clear), format="mp4")
    with source, media_outputs() as outputs:
        out = outputs.open(playlist, format="hls", options=options)
        in_stream: Any = source.streams[0]
        stream: Any = out.add_stream(lambda c: c.add_stream_from_template(in_stream))
        for packet in source.demux(in_stream):
            if packet.dts is None:
                continue
            packet.stream = stream
            out.mux(packet)
    init, segments = read_media_playlist(playlist)
    playlist.unlink(missing_ok=True)
    return replace(track, label=f"{track.label}_cenc", playlist=playlist, init=init,
                   segments=segments)
