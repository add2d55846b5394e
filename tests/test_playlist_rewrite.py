"""mediaq.download_links.rewrite_hls and rewrite_mpd: every URI of an HLS playlist kept in
object storage becomes a link of its own, and nothing outside the job's folder is ever
named; an MPD's names resolve against a folder link."""

from __future__ import annotations

import pytest

from mediaq.download_links import rewrite_hls, rewrite_mpd

MASTER = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="en",URI="audio/index.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=400000,RESOLUTION=160x120,AUDIO="aud"
small/index.m3u8
"""

VARIANT = """#EXTM3U
#EXT-X-TARGETDURATION:1
#EXT-X-MAP:URI="init.mp4"
#EXTINF:1.0,
seg_00000.m4s
#EXTINF:1.0,
../../OTHER-JOB/secret.m4s
#EXTINF:1.0,
https://cdn.example/absolute.m4s
#EXT-X-ENDLIST
"""


def fake_url(relative: str) -> str:
    return "SIGNED:" + relative


def test_master_and_variant_uris_become_links() -> None:
    master = rewrite_hls(MASTER, "JOB-1/clip.m3u8", fake_url)
    assert 'URI="SIGNED:JOB-1/audio/index.m3u8"' in master
    assert "\nSIGNED:JOB-1/small/index.m3u8\n" in master
    assert master.startswith("#EXTM3U\n#EXT-X-VERSION:7\n")
    variant = rewrite_hls(VARIANT, "JOB-1/small/index.m3u8", fake_url)
    lines = variant.splitlines()
    assert '#EXT-X-MAP:URI="SIGNED:JOB-1/small/init.mp4"' in lines
    assert "SIGNED:JOB-1/small/seg_00000.m4s" in lines
    # a name that climbs out of the job's folder is never signed
    assert "#" in lines and not any("OTHER-JOB" in line for line in lines)
    assert "https://cdn.example/absolute.m4s" in lines  # absolute: as the packager wrote it
    assert lines[-1] == "#EXT-X-ENDLIST"


def test_a_refused_uri_becomes_unreachable() -> None:
    out = rewrite_hls(VARIANT, "JOB-1/small/index.m3u8", lambda relative: None)
    assert "seg_00000.m4s" not in out and 'URI="#"' in out


def test_an_mpd_gets_the_folder_link_as_its_base_url() -> None:
    mpd = ('<?xml version="1.0" encoding="utf-8"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"'
           ' type="static">\n  <Period id="0"/>\n</MPD>\n')
    out = rewrite_mpd(mpd, "http://h/api/media/downloads/1/folder/9/s/JOB-1/?a=1&b=2")
    assert ('type="static">\n  <BaseURL>http://h/api/media/downloads/1/folder/9/s/JOB-1/'
            '?a=1&amp;b=2</BaseURL>\n  <Period') in out
    with pytest.raises(ValueError, match="not a DASH MPD"):
        rewrite_mpd("#EXTM3U\n", "http://h/")
