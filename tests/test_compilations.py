"""compile_random (a seeded draw, from a folder or from the catalog) and compile_mega
(long concatenations and grid pages, memory flat) on clips made by Debian's ffmpeg."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mediaq.errors import InputRefused
from tests.helpers import MediaqEnv, requires_tool, run_action
from tests.media_judge import decodes_fully, duration_of, ffmpeg, video_stream

pytestmark = requires_tool("ffmpeg", "ffprobe")


def clip(path: Path, seconds: float, width: int, height: int, *, audio: bool = True) -> Path:
    sound = ["-f", "lavfi", "-i", f"sine=f=330:d={seconds}"] if audio else []
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=10:duration={seconds}",
           *sound, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
           *(["-c:a", "aac"] if audio else []), "-shortest", path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pool")
    for name, seconds, w, h in [("p2", 2, 72, 128), ("p3", 3, 72, 128), ("p4", 4, 72, 128),
                                ("p5", 5, 72, 128), ("l3", 3, 128, 72), ("l4", 4, 128, 72)]:
        clip(root / f"{name}.mp4", seconds, w, h, audio=name != "p4")
    return root


def test_compile_random_draws_the_same_matching_inputs_for_a_seed(folder: Path,
                                                                  tmp_path: Path) -> None:
    def draw(seed: int, out: str) -> dict[str, object]:
        return run_action("compile_random", folder / "p2.mp4", tmp_path / out, count=2,
                          seed=seed, orientation="portrait", min_duration=2.5,
                          crossfade=0.2).data

    first, again = draw(7, "a"), draw(7, "b")
    assert first["inputs"] == again["inputs"]
    names = [Path(i["path"]).name for i in first["inputs"]]  # type: ignore[index]
    assert len(names) == 2 and set(names) <= {"p3.mp4", "p4.mp4", "p5.mp4"}
    others = {tuple(Path(i["path"]).name for i in draw(s, f"s{s}")["inputs"])  # type: ignore[attr-defined]
              for s in range(4)}
    assert len(others) > 1  # the seed matters
    output = tmp_path / "a" / "p2_random.mp4"
    seconds = sum(float(n[1]) for n in names) - 0.2
    assert abs(duration_of(output) - seconds) <= 0.15
    assert (video_stream(output)["width"], video_stream(output)["height"]) == (72, 128)


def test_candidates_outside_the_input_roots_are_refused(folder: Path, tmp_path: Path) -> None:
    outside = clip(tmp_path / "outside.mp4", 1, 64, 64)
    with pytest.raises(InputRefused, match="outside the input roots"):
        run_action("compile_random", folder / "p2.mp4", tmp_path / "o",
                   candidates=[str(outside)])


def test_compile_mega_concat_and_grid(folder: Path, tmp_path: Path) -> None:
    inputs = [str(p) for p in sorted(folder.glob("*.mp4"))] * 2  # 12 inputs
    result = run_action("compile_mega", folder / "p2.mp4", tmp_path / "c", inputs=inputs,
                        clip_seconds=1.0, crossfade=0.2, width=128, height=72)
    output = result.outputs[0].staging_path
    assert abs(duration_of(output) - (6 * 1.0 - 5 * 0.2)) <= 0.15  # duplicates: once each
    assert decodes_fully(output)
    grid = run_action("compile_mega", folder / "p2.mp4", tmp_path / "g", layout="grid",
                      columns=2, rows=2, width=256, height=144)
    assert grid.data["pages"] == 2
    # Page 1: l3, l4, p2, p3 (4 s, the longest); page 2: p4, p5 (5 s).
    assert abs(duration_of(grid.outputs[0].staging_path) - 9.0) <= 0.15


MEASURE = """
import json, resource, sys
from pathlib import Path
from tests.helpers import run_action
inputs = json.loads(sys.argv[1])
run_action("compile_mega", Path(inputs[0]), Path(sys.argv[2]), inputs=inputs,
           clip_seconds=0.5, crossfade=0.1, width=128, height=72)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_kib(inputs: list[str], out: Path) -> int:
    done = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(inputs), str(out)],
                          capture_output=True, text=True, timeout=300, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    return int(done.stdout.split()[-1])


def test_compile_mega_memory_stays_flat(tmp_path: Path) -> None:
    many = [str(clip(tmp_path / f"m{i:02d}.mp4", 0.5, 128, 72)) for i in range(30)]
    few = peak_kib(many[:3], tmp_path / "few")
    lots = peak_kib(many, tmp_path / "lots")
    assert lots < few * 1.15 + 8_000, (few, lots)  # ten times the inputs, same memory


def test_a_catalog_draw_submitted_as_a_job(mq: MediaqEnv, folder: Path) -> None:
    library = mq.inputs / "pool"
    library.mkdir()
    for path in folder.glob("*.mp4"):
        (library / path.name).write_bytes(path.read_bytes())
    mq.cli("assets", "scan", str(library))
    mq.apply_workflow({
        "workflow_code": "WF-RANDOM", "workflow_name": "random", "workflow_type": "video",
        "steps": [{"step_number": 1, "step_name": "compile_random",
                   "action": "compile_random", "parameters": {"crossfade": 0.2}}]})
    args = ("assets", "random", "--count", "2", "--seed", "11", "--orientation", "landscape")
    drawn = mq.cli(*args, "--submit", "WF-RANDOM").stdout.split()
    code = drawn.pop()
    assert drawn.pop() == "submitted"
    assert sorted(Path(p).name for p in drawn) == ["l3.mp4", "l4.mp4"]
    mq.run_burst()
    job = mq.job(code)
    assert job["status"] == "completed", job["error_message"]
    row = mq.one("SELECT output_data FROM step_executions WHERE job_id = %s", (job["id"],))
    assert sorted(Path(i["path"]).name for i in row["output_data"]["inputs"]) == \
        ["l3.mp4", "l4.mp4"]
