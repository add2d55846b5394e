"""Workflows as graphs: needs, when (CEL), for_each fan-out and fan-in.

The pure rules (mediaq.graph) with examples and generated graphs; `workflows apply`
refusing graphs that cannot run, with one line naming the step; and jobs run by a real
worker process on a real PostgreSQL: a skipped step, a three-item fan-out and its
fan-in, a retry that re-runs only the item that failed, `mediaq show` drawing it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaq import graph, workflows
from mediaq.errors import WorkflowError
from tests.helpers import MediaqEnv, diagnostic_workflow

# -- the rules ------------------------------------------------------------------------------


def nodes(*needs: tuple[Any, ...] | None) -> list[graph.StepNode]:
    return [graph.StepNode(i, f"Step {chr(64 + i)}", n) for i, n in enumerate(needs, start=1)]


def test_a_step_without_needs_follows_the_one_before() -> None:
    assert graph.resolve_needs(nodes(None, None, None)) == {1: (), 2: (1,), 3: (2,)}


def test_needs_name_steps_by_name_number_or_slug() -> None:
    steps = nodes(None, (1,), ("Step A",), ("step_b", "3"))
    assert graph.resolve_needs(steps) == {1: (), 2: (1,), 3: (1,), 4: (2, 3)}
    assert graph.topological_order(steps) == [1, 2, 3, 4]
    assert graph.depths(graph.resolve_needs(steps)) == {1: 1, 2: 2, 3: 2, 4: 3}


@pytest.mark.parametrize(("needs", "message"), [
    ((None, ("Nope",)), r"step 2 'Step B': needs 'Nope', which is not a step"),
    ((None, (2,)), r"step 2 'Step B': needs itself"),
    ((("Step C",), (1,), (2,)),
     r"step 1 'Step A': its needs form a cycle \(through steps 1, 2, 3\)"),
])
def test_a_graph_that_cannot_run_is_refused_naming_the_step(
    needs: tuple[Any, ...], message: str,
) -> None:
    with pytest.raises(WorkflowError, match=message):
        graph.topological_order(nodes(*needs))


@st.composite
def dags(draw: st.DrawFn) -> list[graph.StepNode]:
    """Random acyclic graphs: each step needs some earlier steps (or none, or follows the
    one before), numbered in a shuffled order."""
    count = draw(st.integers(1, 12))
    numbers = draw(st.permutations(range(1, count + 1)))
    steps = []
    for position, number in enumerate(numbers):
        earlier = list(numbers[:position])
        needs = draw(st.none() | st.lists(st.sampled_from(earlier), unique=True)
                     if earlier else st.none())
        steps.append(graph.StepNode(number, f"s{number}", tuple(needs) if needs is not None
                                    else None))
    # Steps without needs follow the step numbered before them, which may come later in
    # the drawing order: keep only drawings that stay acyclic under that rule.
    return steps


@settings(max_examples=200, deadline=None)
@given(dags())
def test_every_step_runs_after_everything_it_needs(steps: list[graph.StepNode]) -> None:
    try:
        order = graph.topological_order(steps)
    except WorkflowError as exc:  # an implicit "follows the step before" closed a cycle
        assert "cycle" in str(exc)
        return
    needs = graph.resolve_needs(steps)
    position = {number: i for i, number in enumerate(order)}
    assert sorted(order) == sorted(s.number for s in steps)
    for number, deps in needs.items():
        assert all(position[d] < position[number] for d in deps)
        assert all(graph.depths(needs)[d] < graph.depths(needs)[number] for d in deps)


def test_conditions_are_cel_over_input_params_and_earlier_steps() -> None:
    variables = {"input": {"extension": "mp4"}, "params": {"force": False},
                 "steps": {"probe": {"video": {"codec": "h264", "height": 720}}}}
    assert graph.condition_holds(
        'steps.probe.video.codec == "h264" && steps.probe.video.height <= 1080', variables)
    assert not graph.condition_holds("params.force", variables)
    assert graph.condition_holds('input.extension in ["mp4", "mov"]', variables)
    with pytest.raises(graph.ConditionError, match="no such member in mapping: 'audio'"):
        graph.condition_holds("steps.probe.audio.channels > 1", variables)
    with pytest.raises(graph.ConditionError, match="not true or false"):
        graph.condition_holds("steps.probe.video.height", variables)


def test_for_each_items_come_from_the_yaml_or_from_an_earlier_step() -> None:
    assert graph.items_of({"resolution": ["1080p", "720p"]}, {}) == [
        {"resolution": "1080p"}, {"resolution": "720p"}]
    chunks = {"steps": {"split": {"chunks": [{"start": 0}, {"start": 10}]}}}
    assert graph.items_of("steps.split.chunks", chunks) == [{"start": 0}, {"start": 10}]
    with pytest.raises(graph.ConditionError, match="item 0 is int, not a mapping"):
        graph.items_of("[1, 2]", {})


# -- workflows apply -----------------------------------------------------------------------


def graph_workflow(**overrides: dict[str, Any]) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {"step_name": "probe", "action": "echo",
         "parameters": {"value": {"codec": "h264", "height": 720}}},
        {"step_name": "transcode", "action": "noop",
         "when": "steps.probe.value.height > 1080"},
        {"step_name": "rungs", "action": "echo", "needs": ["probe"],
         "for_each": {"value": [1080, 720, 480]}},
        {"step_name": "collect", "action": "echo", "needs": ["rungs", "transcode"]},
    ]
    for index, step in enumerate(steps):
        step.update(overrides.get(step["step_name"], {}))
        steps[index] = step
    return diagnostic_workflow("T-GRAPH", *steps)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"collect": {"needs": ["rungs", "nothing"]}},
     r"workflow T-GRAPH, step 4 'collect': needs 'nothing', which is not a step"),
    ({"probe": {"needs": ["collect"]}}, r"step 1 'probe': its needs form a cycle"),
    ({"transcode": {"when": "steps.probe.value.height >"}},
     r"step 2 'transcode': when: 'steps.probe.value.height >' does not parse as a CEL"),
    ({"rungs": {"for_each": {"value": []}}}, r"step 3 'rungs': for_each: it must be"),
    ({"rungs": {"resource_category": "tpu"}}, r"step 3 'rungs': resource_category must be"),
    ({"rungs": {"fuse": "always"}}, r"step 3 'rungs': fuse must be one of auto, never"),
])
def test_apply_refuses_a_graph_that_cannot_run(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(WorkflowError, match=message) as refused:
        workflows.normalise(graph_workflow(**overrides))
    assert "\n" not in str(refused.value)


# -- jobs ----------------------------------------------------------------------------------


def executions(mq: MediaqEnv, code: str) -> list[dict[str, Any]]:
    return mq.query(
        "SELECT ws.step_name, se.item_index, se.status, se.output_data, se.started_at,"
        "       se.completed_at, se.error_class"
        "  FROM step_executions se JOIN workflow_steps ws ON ws.id = se.step_id"
        "  JOIN workflow_jobs j ON j.id = se.job_id WHERE j.job_code = %s ORDER BY se.id",
        (code,))


def test_a_graph_job_skips_fans_out_and_fans_in(mq: MediaqEnv) -> None:
    mq.apply_workflow(graph_workflow())
    code = mq.submit("T-GRAPH", mq.input_file("clip.bin"))
    mq.run_burst()
    assert mq.job(code)["status"] == "completed"
    rows = executions(mq, code)
    skipped = [r for r in rows if r["step_name"] == "transcode"]
    assert [(r["status"], r["output_data"]) for r in skipped] == [
        ("skipped", {"skipped": "its condition is false "
                                "(when: steps.probe.value.height > 1080)"})]
    # Items are tasks of their own: a worker with two slots may run two at once.
    items = sorted((r for r in rows if r["step_name"] == "rungs"),
                   key=lambda r: r["item_index"])
    assert [(r["item_index"], r["status"], r["output_data"]["value"]) for r in items] == [
        (0, "completed", 1080), (1, "completed", 720), (2, "completed", 480)]
    (collect,) = [r for r in rows if r["step_name"] == "collect"]
    # The fan-in got the three items' outputs, in item order; the skipped step gave none.
    assert collect["output_data"]["received"] == {"rungs": [1080, 720, 480]}
    assert collect["started_at"] >= max(r["completed_at"] for r in items)
    shown = mq.cli("show", code).stdout
    assert "rungs" in shown and "3/3 items completed: 1 completed on " in shown
    # Each item's task is drawn with its state and worker.
    assert all(f"{n} completed on " in shown for n in (1, 2, 3))
    assert "skipped" in shown


def test_a_retry_reruns_only_the_item_that_failed(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow(
        "T-FANOUT-RETRY",
        {"step_name": "work", "action": "fail", "on_failure": "retry",
         "parameters": {"kind": "transient"}, "for_each": {"times": [0, 1, 0]}},
        {"step_name": "after", "action": "echo"}))
    code = mq.submit("T-FANOUT-RETRY", mq.input_file("a.bin"))
    mq.run_burst()
    assert mq.job(code)["status"] == "completed"
    runs = [(r["item_index"], r["status"]) for r in executions(mq, code)
            if r["step_name"] == "work"]
    # By item (items may run at once), each item's runs in order.
    assert sorted(runs, key=lambda run: run[0]) == [
        (0, "completed"), (1, "failed"), (1, "completed"), (2, "completed")]


def test_seeded_workflows_are_graphs_and_show_draws_them(mq: MediaqEnv) -> None:
    mq.seed()
    shown = mq.cli("workflows", "show", "WF-VIDEO-TRANSCODE").stdout
    graph_lines = shown[shown.index("Graph"):].splitlines()[1:]
    assert graph_lines[2].startswith("stage 3") and "Transcode 1080p" in graph_lines[2]
    assert "[gpu_encode, else cpu]" in graph_lines[2] and graph_lines[2].endswith("<- 2")
    assert graph_lines[-1].startswith("stage 4") and graph_lines[-1].endswith("<- 3, 4, 5, 6")
    exported = mq.cli("workflows", "export", "WF-VIDEO-TRANSCODE").stdout
    assert "needs:" in exported and "fuse:" not in exported  # defaults left out
    # What export prints applies back unchanged (no new version).
    path = mq.root / "export.yaml"
    path.write_text(exported, encoding="utf-8")
    assert "unchanged" in mq.cli("workflows", "apply", str(path)).stdout


def test_seed_000_inserts_still_make_a_chain(mq: MediaqEnv) -> None:
    """A workflow written as seed 000 writes its steps (plain INSERTs, none of the graph
    columns) runs its steps one after the other."""
    with mq.connect() as conn:
        workflow_id = conn.execute(
            "INSERT INTO workflow_definitions (workflow_code, workflow_name, steps_json)"
            " VALUES ('T-SEED-000', 'seed 000 style', '[]') RETURNING id").fetchone()["id"]
        for number in (1, 2, 3):
            conn.execute(
                "INSERT INTO workflow_steps (workflow_id, step_number, step_name, action,"
                " parameters) VALUES (%s, %s, %s, 'echo', %s)",
                (workflow_id, number, f"step {number}", f'{{"value": {number}}}'))
    code = mq.submit("T-SEED-000", mq.input_file("b.bin"))
    mq.run_burst()
    assert mq.job(code)["status"] == "completed"
    rows = executions(mq, code)
    assert [r["output_data"]["received"] for r in rows] == [
        {}, {"step_1": 1}, {"step_2": 2}]


def test_random_graph_jobs_complete_in_dependency_order(mq: MediaqEnv, tmp_path: Path) -> None:
    """A few random graphs, run end to end: every step starts after its needs ended."""
    rng = random.Random(18)
    for n in range(3):
        count = rng.randint(3, 7)
        steps = []
        for i in range(1, count + 1):
            needs = rng.sample(range(1, i), k=rng.randint(0, min(2, i - 1))) if i > 1 else []
            steps.append({"step_name": f"s{i}", "action": "echo", "parameters": {"value": i},
                          "needs": [f"s{j}" for j in needs]})
        mq.apply_workflow(diagnostic_workflow(f"T-RANDOM-{n}", *steps))
        code = mq.submit(f"T-RANDOM-{n}", mq.input_file(f"r{n}.bin"))
        mq.run_burst()
        assert mq.job(code)["status"] == "completed"
        rows = {r["step_name"]: r for r in executions(mq, code)}
        for step in steps:
            for need in step["needs"]:
                assert rows[step["step_name"]]["started_at"] >= rows[need]["completed_at"]


def test_a_gpu_workflow_falls_back_to_cpu_on_a_machine_without_one(mq: MediaqEnv) -> None:
    """The laptop case: a GPU workflow whose GPU steps name `fallback: cpu` runs on a
    worker with no VRAM budget instead of waiting for ever; one without a fallback waits,
    and its ETA says why."""
    gpu_step = {"step_name": "encode", "action": "echo", "resource_category": "gpu_encode"}
    mq.apply_workflow(diagnostic_workflow(
        "T-FALLS-BACK", {"step_name": "check", "action": "noop", "resource_category": "cpu"},
        {**gpu_step, "fallback": "cpu"}, resource_category="gpu_encode", vram_required=4000))
    mq.apply_workflow(diagnostic_workflow(
        "T-WAITS", gpu_step, resource_category="gpu_encode", vram_required=4000))
    falls_back = mq.submit("T-FALLS-BACK", mq.input_file("c.bin"))
    waits = mq.submit("T-WAITS", mq.input_file("d.bin"))
    mq.run_burst("--vram-mb", "0")
    job = mq.job(falls_back)
    assert (job["status"], job["resource_category"], job["vram_required"]) == (
        "completed", "cpu", 0)
    assert ("no live worker serves gpu_encode with 4000 MB of VRAM: running on cpu instead"
            in job["log"])
    assert mq.job(waits)["status"] in ("pending", "queued")
    assert mq.job(waits)["resource_category"] == "gpu_encode"
