"""The output-writer lifecycle every encoding action shares (mediaq/actions/media_output.py):
finished outputs are whole files; a failure anywhere, cancellation included, leaves none."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from av.container import OutputContainer
from av.video.frame import VideoFrame

from mediaq.actions.avio import probe
from mediaq.actions.clip import add_h264_stream, encode_frame
from mediaq.actions.media_output import MediaOutput, media_output, media_outputs
from mediaq.errors import Cancelled, TransientError

RATE = Fraction(10)


def h264(container: OutputContainer) -> Any:
    return add_h264_stream(container, "libx264", width=64, height=64, rate=RATE,
                           options={"preset": "ultrafast"})


def write_frames(output: MediaOutput, count: int) -> None:
    stream = output.add_stream(h264, drain=lambda s: s.encode(None))
    for index in range(count):
        frame = VideoFrame.from_ndarray(np.full((96, 64), index * 20, np.uint8),
                                        format="yuv420p")
        output.mux(encode_frame(stream, frame, index))


def test_a_finished_output_holds_every_frame_the_encoder_buffered(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with media_output(path, format="mp4") as output:
        write_frames(output, 10)
    info = probe(path)
    assert info.video is not None and info.video.frames == 10  # the drain ran
    assert info.duration == pytest.approx(1.0, abs=0.05)


def test_cancelling_in_the_block_deletes_every_output_of_the_group(tmp_path: Path) -> None:
    paths = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    with pytest.raises(Cancelled), media_outputs() as outputs:
        for path in paths:
            write_frames(outputs.open(path, format="mp4"), 5)
        assert all(path.exists() for path in paths)
        raise Cancelled()
    assert not any(path.exists() for path in paths)


def test_a_failure_while_finishing_deletes_the_outputs_already_closed(tmp_path: Path) -> None:
    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"

    def disk_full() -> list[Any]:
        raise OSError(28, "No space left on device")

    with pytest.raises(TransientError, match=r"second\.mp4: write failed"), \
            media_outputs() as outputs:
        write_frames(outputs.open(first, format="mp4"), 3)
        late = outputs.open(second, format="mp4")
        write_frames(late, 3)
        late.drain_on_finish(disk_full)  # runs after first.mp4 was closed whole
    assert not first.exists() and not second.exists()
