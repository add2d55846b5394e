"""The seeded workflows' graphs: independent steps run side by side (the same stage),
and every step that reads another's output waits for it."""

from __future__ import annotations

import pytest

from mediaq import graph, workflows


def stages(code: str) -> dict[str, int]:
    """Each step's stage by name (1: runs first)."""
    path = workflows.SEED_DIR / f"{code.lower()}.yaml"
    doc = workflows.load_file(path)
    nodes = [graph.StepNode(s["step_number"], s["step_name"],
                            None if s.get("needs") is None else tuple(s["needs"]))
             for s in doc["steps"]]
    depth = graph.depths(graph.resolve_needs(nodes))
    return {node.name: depth[node.number] for node in nodes}


@pytest.mark.parametrize(("code", "together", "after"), [
    ("WF-LIBRARY-TAG", ["Tag Media", "Detect Faces"], "Finalize Output"),
    ("WF-VIDEO-HIGHLIGHTS", ["Extract Scenes", "Detect Faces"], "Generate Digest"),
    ("WF-DOC-PROCESS", ["Extract Text", "Render Thumbnail", "Convert to Text"],
     "Finalize Output"),
    ("WF-IMAGE-PROCESS", ["Generate Thumbnail", "Optimize", "Convert WebP"], None),
])
def test_independent_steps_share_a_stage(code: str, together: list[str],
                                         after: str | None) -> None:
    stage = stages(code)
    assert len({stage[name] for name in together}) == 1
    if after is not None:
        assert stage[after] > stage[together[0]]


def test_the_image_steps_read_the_resize() -> None:
    stage = stages("WF-IMAGE-PROCESS")
    assert stage["Validate Image"] < stage["Resize Large"] < stage["Optimize"]


def test_the_highlights_clips_follow_the_digest() -> None:
    stage = stages("WF-VIDEO-HIGHLIGHTS")
    assert (stage["Validate Input"] < stage["Detect Faces"] < stage["Generate Digest"]
            < stage["Extract Clips"] < stage["Finalize Output"])
