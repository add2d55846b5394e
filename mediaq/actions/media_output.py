"""Writing media files: the one lifecycle every encoding action goes through.

An output is opened, given its streams, fed packets, drained (each encoder's
buffered frames), and closed. If anything fails before the last output is closed,
cancellation and timeouts included, every output of the group is closed quietly
and deleted: a step that stops half way never leaves a file the engine could
mistake for a result.

    with media_outputs() as outputs:
        out = outputs.open(path, format="mp4", options={"movflags": "+faststart"})
        video = out.add_stream(make_video_stream, drain=lambda s: s.encode(None))
        for frame in frames:
            out.mux(video.encode(frame))
    # here every output is drained and closed, or none exists any more

Storage errors while writing become TransientError (see :func:`avio.writing`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import av
import av.error
from av.container import OutputContainer

from mediaq.actions.avio import writing

S = TypeVar("S")
Drain = Callable[[], Iterable[Any]]


class MediaOutput:
    """One output file being written (open it with :meth:`OutputGroup.open`)."""

    def __init__(self, path: Path, container: OutputContainer) -> None:
        self.path = path
        self.container = container
        self._drains: list[Drain] = []

    def add_stream(self, create: Callable[[OutputContainer], S], *,
                   drain: Callable[[S], Iterable[Any]] | None = None) -> S:
        """The stream ``create`` adds to the container; ``drain(stream)`` gives the
        encoder's last packets when the output is finished."""
        with writing(self.path):
            stream = create(self.container)
        if drain is not None:
            self.drain_on_finish(functools.partial(drain, stream))
        return stream

    def drain_on_finish(self, drain: Drain) -> None:
        """Mux what ``drain()`` returns before closing (drains run in the order added)."""
        self._drains.append(drain)

    def set_metadata(self, tags: dict[str, str]) -> None:
        with writing(self.path):
            self.container.metadata.update(tags)

    def mux(self, packets: Any) -> None:
        """Write one packet or a list of them."""
        with writing(self.path):
            self.container.mux(packets)

    def finish(self) -> None:
        """Drain every encoder, then close (writing the trailer, e.g. MP4's index)."""
        with writing(self.path):
            for drain in self._drains:
                self.container.mux(list(drain()))
            self.container.close()

    def discard(self) -> None:
        """Close without caring how, and delete the file."""
        with contextlib.suppress(av.error.FFmpegError, OSError):
            self.container.close()
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


class OutputGroup:
    """Outputs written together (a fused transcode, a ladder): all finished or none kept."""

    def __init__(self) -> None:
        self.outputs: list[MediaOutput] = []

    def open(self, path: Path, *, format: str | None = None,
             options: dict[str, str] | None = None) -> MediaOutput:
        """Open ``path`` for writing as ``format`` (None: from the file name) with muxer
        ``options``; it is finished or deleted with the rest of the group."""
        with writing(path):
            container = av.open(str(path), mode="w", format=format, options=options or {})
        output = MediaOutput(path, container)
        self.outputs.append(output)
        return output


@contextlib.contextmanager
def media_outputs() -> Iterator[OutputGroup]:
    """A group of outputs, drained and closed in order when the block ends; on any
    failure (in the block or while finishing) every one of them is deleted."""
    group = OutputGroup()
    try:
        yield group
        for output in group.outputs:
            output.finish()
    except BaseException:
        for output in group.outputs:
            output.discard()
        raise


@contextlib.contextmanager
def media_output(path: Path, *, format: str | None = None,
                 options: dict[str, str] | None = None) -> Iterator[MediaOutput]:
    """One output file with the lifecycle of :func:`media_outputs`."""
    with media_outputs() as group:
        yield group.open(path, format=format, options=options)
