"""Closed loop on real replays: a full-state world model and the policy play from a real start."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from evalsupport import quick_experiment, writable_root

from meleewm_core.cli import main
from meleewm_core.policy import POLICY_MODEL_NAME, train_policy_run
from meleewm_core.simulate import simulate
from meleewm_core.train import train_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# Both flags on: the loop must rebuild the press events and the state_age embedding itself.
FLAGS = {"press_events": True, "state_age_as_embed": True}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, parsed_root):
    root = writable_root(tmp_path_factory, parsed_root, "simulate_root")
    world = train_run(
        quick_experiment("sim-world", model={"heads": "full_state"}, encoding=FLAGS), root, progress=False
    )
    policy = train_policy_run(
        quick_experiment("sim-policy", model={"name": POLICY_MODEL_NAME}, encoding=FLAGS),
        root,
        progress=False,
    )
    return root, world, policy


def test_simulate_writes_trajectory_and_plot(runs):
    root, world, policy = runs
    result = simulate(world.run_dir, policy.run_dir, root, frames=90, start_row=300, device="cpu")
    table = pq.read_table(result.trajectory)
    assert table.num_rows == 90
    for column in (
        "step",
        "sim.p0.x",
        "sim.p1.percent",
        "sim.p0.action",
        "real.p0.x",
        "sim.p1.main_x",
        "sim.p0.A",
    ):
        assert column in table.column_names, column
    # The first simulated frame continues the real start state, so it is close to the real one.
    assert abs(table["sim.p0.x"][0].as_py() - table["real.p0.x"][0].as_py()) < 20
    png = result.plot.read_bytes()
    assert png[:8] == PNG_SIGNATURE and len(png) > 10_000
    # Same seed, same simulation.
    again = simulate(world.run_dir, policy.run_dir, root, frames=90, start_row=300, device="cpu")
    assert pq.read_table(again.trajectory).equals(table)


def test_simulate_refuses_a_model_without_full_state_heads(runs, capsys):
    root, _, policy = runs
    v22 = train_run(quick_experiment("sim-v22", encoding=FLAGS), root, progress=False)
    code = main(
        [
            "simulate",
            str(v22.run_dir),
            "--policy",
            str(policy.run_dir),
            "--data",
            str(root.root),
            "--frames",
            "5",
        ]
    )
    assert code == 1
    assert "full_state" in capsys.readouterr().err


def test_cli_simulate(runs, capsys):
    root, world, policy = runs
    code = main(
        [
            "simulate",
            str(world.run_dir),
            "--policy",
            str(policy.run_dir),
            "--data",
            str(root.root),
            "--frames",
            "30",
            "--device",
            "cpu",
            "--greedy-buttons",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "simulated 30 frames" in out and ".parquet" in out


def test_simulate_refuses_runs_with_different_encodings(runs, capsys):
    root, world, _ = runs
    plain_policy = train_policy_run(
        quick_experiment("sim-policy-plain", model={"name": POLICY_MODEL_NAME}), root, progress=False
    )
    code = main(
        ["simulate", str(world.run_dir), "--policy", str(plain_policy.run_dir), "--data", str(root.root)]
    )
    assert code == 1
    assert "encoding config differs" in capsys.readouterr().err
