"""Evaluation on real replays: report shape, baselines on the same frames, rollouts, plots, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from evalsupport import oracle, persistence, quick_experiment, writable_root

from meleewm_core.cli import main
from meleewm_core.data import FrameData, make_batches
from meleewm_core.encoding import EncodingSpec, head_layout
from meleewm_core.eval import (
    REPORT_STEPS,
    SUBSYSTEM_DEFINITIONS,
    EvalReport,
    EvaluableRun,
    evaluate_run,
    load_run,
    model_predictor,
    open_val_data,
    rollout,
    teacher_forced,
    val_arrays,
)
from meleewm_core.models import build_model
from meleewm_core.train import ensure_shards, train_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def root(tmp_path_factory, parsed_root):
    return writable_root(tmp_path_factory, parsed_root, "eval_root")


@pytest.fixture(scope="module")
def v22_run(root):
    return train_run(quick_experiment("eval-v22"), root, progress=False)


@pytest.fixture(scope="module")
def report(v22_run, root):
    return evaluate_run(v22_run.run_dir, root, steps=20, starts=8, game_start_steps=30, progress=False)


def test_report_has_every_section_with_consistent_shapes(report, v22_run):
    saved = json.loads((v22_run.run_dir / "eval" / "report.json").read_text())
    assert {"teacher_forced", "rollout", "subsystems", "plots"} <= set(saved)
    for key in (
        "action_acc",
        "action_change_acc",
        "position_mae",
        "damage_mae",
        "field/shield_mae",
        "field/jumps_acc",
    ):
        assert set(saved["teacher_forced"][key]) >= {"model", "persistence"}, key
    assert set(saved["teacher_forced"]["position_mae"]) == {"model", "persistence", "constant_velocity"}

    rollout_report = saved["rollout"]
    assert rollout_report["steps"] == list(range(1, 21))
    assert rollout_report["report_steps"] == [s for s in REPORT_STEPS if s <= 20]
    assert rollout_report["num_starts"] == 8
    assert len(rollout_report["counts"]) == 20
    for field in ("position", "x", "y", "percent", "shield", "action", "on_ground"):
        for values in rollout_report["fields"][field].values():
            assert len(values) == 20
    assert set(rollout_report["fields"]["position"]) == {"model", "persistence", "constant_velocity"}
    # v22 heads do not predict velocities: the report must say they were carried.
    assert "self_x_air" in rollout_report["carried_fields"] and "x" not in rollout_report["carried_fields"]
    assert set(saved["subsystems"]) == set(SUBSYSTEM_DEFINITIONS)
    assert report.position_mae == pytest.approx(saved["teacher_forced"]["position_mae"]["model"])
    assert (v22_run.run_dir / "eval" / "report.md").read_text().startswith("# Evaluation of eval-v22")
    # The file reads back into the report it was written from (its NaNs, written as null, included).
    reread = EvalReport.model_validate_json((v22_run.run_dir / "eval" / "report.json").read_text())
    assert reread.model_dump_json() == report.model_dump_json()


def test_rollouts_from_game_start_begin_after_each_validation_games_first_context(report, v22_run, root):
    from_start = report.rollout_from_game_start
    games = val_arrays(open_val_data(_world(v22_run.run_dir), root))[2]
    assert {md5 for md5, _, _ in games} == set(report.val_md5s)
    long_enough = [md5 for md5, _, num_frames in games if num_frames >= 10 + 30]
    assert long_enough, "the test data needs a validation game of 40 frames"
    assert from_start.starts == [{"md5": md5, "row": 10} for md5 in long_enough]
    assert from_start.steps == list(range(1, 31)) and from_start.report_steps == [1, 5, 10, 20, 30]
    position = from_start.fields["position"]
    assert report.game_start_position_error == pytest.approx(position["model"][19])
    assert report.game_start_position_error_constant_velocity == pytest.approx(
        position["constant_velocity"][19]
    )
    assert report.game_start_position_error_last == pytest.approx(position["model"][-1])
    assert "Rollout from each validation game's start" in (v22_run.run_dir / "eval" / "report.md").read_text()
    # Euclidean distance per player lies between the per-axis mean error and twice it.
    for rolled in (report.rollout, from_start):
        for who, distances in rolled.fields["distance"].items():
            for distance, error in zip(distances, rolled.fields["position"][who], strict=True):
                assert error - 1e-4 <= distance <= 2 * error + 1e-4, who


def test_only_validation_games_are_used(report, v22_run):
    manifest = json.loads((v22_run.run_dir / "manifest.json").read_text())
    assert report.val_md5s == manifest["game_md5s"]["val"]
    train_games = set(manifest["game_md5s"]["train"])
    assert all(start["md5"] not in train_games for start in report.rollout.starts)
    val_frames = manifest["num_frames"]["val"]
    assert report.teacher_forced_frames == val_frames - 10 * len(report.val_md5s)


def test_plots_are_non_empty_pngs(report):
    assert set(report.plots) == {"rollout_error", "trajectories", "subsystems", "rollout_from_game_start"}
    for path in report.plots.values():
        data = path.read_bytes()
        assert data[:8] == PNG_SIGNATURE, path
        assert len(data) > 10_000, f"{path} is suspiciously small ({len(data)} bytes)"


def _world(run_dir) -> EvaluableRun:
    return load_run(run_dir, "cpu")


def test_oracle_scores_zero_error_and_persistence_equals_its_baseline(v22_run, root):
    run = _world(v22_run.run_dir)
    data = open_val_data(run, root)
    batches = make_batches(
        data, "val", mode="memory", batch_size=2048, context_len=10, device="cpu", shuffle=False
    )

    perfect, perfect_subsystems, _ = teacher_forced(oracle(run.layout), batches, run.layout, run.experiment)
    # v22 heads predict percent and action, so the oracle detects every damage hit and transition.
    assert perfect_subsystems["movement"]["metrics"]["position_mae"]["model"] == pytest.approx(0, abs=1e-4)
    assert perfect_subsystems["action_transitions"]["frames"] > 0
    assert perfect_subsystems["action_transitions"]["metrics"]["changed_acc"]["model"] == 1.0
    assert perfect_subsystems["damage_knockback"]["metrics"]["percent_change_mae"]["model"] == pytest.approx(
        0, abs=1e-3
    )
    for key, entry in perfect.items():
        if key.endswith("_mae"):
            assert entry["model"] == pytest.approx(0, abs=1e-4), key
        elif key.endswith("_acc"):
            assert entry["model"] == 1.0, key

    repeat, subsystems, _ = teacher_forced(persistence(run.layout), batches, run.layout, run.experiment)
    for key, entry in repeat.items():
        if "persistence" in entry and key != "action_change_acc":
            assert entry["model"] == pytest.approx(entry["persistence"], abs=1e-6), key
    assert repeat["action_change_acc"]["model"] == 0.0
    movement = subsystems["movement"]["metrics"]["position_mae"]
    assert movement["model"] == pytest.approx(movement["persistence"], abs=1e-6)

    rolled = rollout(oracle(run.layout), data, run.layout, 10, steps=15, starts=6).report
    for field in ("x", "y", "percent", "shield", "position"):
        assert max(rolled.fields[field]["model"]) == pytest.approx(0, abs=1e-3), field
    assert min(rolled.fields["action"]["model"]) == 1.0
    for from_game_start in (False, True):
        held = rollout(
            persistence(run.layout), data, run.layout, 10, steps=15, starts=6, from_game_start=from_game_start
        ).report
        for field, by in held.fields.items():
            assert by["model"] == pytest.approx(by["persistence"], abs=1e-5), (field, from_game_start)
    from_start = rollout(oracle(run.layout), data, run.layout, 10, steps=15, from_game_start=True).report
    assert max(from_start.fields["position"]["model"]) == pytest.approx(0, abs=1e-3)
    capped = rollout(
        oracle(run.layout), data, run.layout, 10, steps=15, starts=1, from_game_start=True
    ).report
    assert capped.num_starts == 1 and capped.starts[0] in from_start.starts


@pytest.mark.parametrize(
    ("encoding", "heads"),
    [
        ({}, "full_state"),
        ({"state_age_as_embed": True}, "v22"),
        ({"press_events": True}, "v22"),
        ({"state_age_as_embed": True, "press_events": True}, "full_state"),
        ({"state_age_as_embed": True, "press_events": True, "action_age_as_embed": True}, "full_state"),
    ],
    ids=["full-state", "state-age-embed", "press-events", "all-flags", "action-age"],
)
def test_rollout_runs_with_each_encoding_flag(root, encoding, heads):
    experiment = quick_experiment("flags", encoding=encoding, model={"heads": heads})
    folder = ensure_shards(experiment, root, progress=False)
    spec = EncodingSpec(experiment.encoding)
    layout = head_layout(spec, heads)

    data = FrameData.from_shards(folder, spec, train_percent=70)
    untrained = build_model(experiment.encoding, experiment.model)

    trace = rollout(model_predictor(untrained), data, layout, 10, steps=12, starts=5)
    report = trace.report
    assert report.num_starts == 5 and trace.model_xy.shape == (5, 12, 2, 2)
    assert all(math.isfinite(v) for v in report.fields["position"]["model"])
    expected_carried = [] if heads == "full_state" else ["self_x_air"]
    assert all(name in report.carried_fields for name in expected_carried)
    if heads == "full_state":
        assert report.carried_fields == []
    # The oracle closes the loop exactly under every flag.
    perfect = rollout(oracle(layout), data, layout, 10, steps=12, starts=5)
    assert max(perfect.report.fields["position"]["model"]) == pytest.approx(0, abs=1e-3)
    # The trace keeps each step's actions: the oracle's are the real ones, the untrained model's not.
    assert perfect.model_actions.shape == (5, 12, 2)
    assert (perfect.model_actions == perfect.true_actions).all()
    assert (trace.model_actions != trace.true_actions).any()


def test_cli_eval_prints_headline_and_writes_report(v22_run, root, capsys):
    code = main(
        ["eval", str(v22_run.run_dir), "--data", str(root.root), "--steps", "10", "--starts", "4", "--quiet"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "rollout step 10" in out and "persistence" in out
    saved = json.loads((v22_run.run_dir / "eval" / "report.json").read_text())
    assert saved["rollout"]["steps"][-1] == 10
    assert "from the start of" in out and saved["rollout_from_game_start"]["steps"][-1] == 500

    code = main(
        ["eval", str(v22_run.run_dir), "--data", str(root.root), "--steps", "10", "--starts", "4"]
        + ["--game-start-steps", "1000000", "--quiet"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "no validation game is long enough for 1000000 steps from its start" in out
    saved = json.loads((v22_run.run_dir / "eval" / "report.json").read_text())
    assert saved["rollout_from_game_start"] is None
    assert (
        "Skipped: no validation game has 1000000 frames"
        in (v22_run.run_dir / "eval" / "report.md").read_text()
    )


def test_cli_eval_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    code = main(["eval", str(tmp_path), "--data", str(tmp_path)])
    assert code == 1
    assert "no manifest.json" in capsys.readouterr().err


def test_deaths_and_respawns_end_the_scored_part_of_a_rollout(v22_run, root):
    run = _world(v22_run.run_dir)
    trace = rollout(persistence(run.layout), open_val_data(run, root), run.layout, 10, steps=120, starts=64)
    report = trace.report
    # The validation game has stock losses inside some 120-frame windows: those rollouts stop counting...
    assert report.stock_loss["real_events"] >= 1
    assert report.counts[-1] < report.counts[0] == report.num_starts
    # ...and they are what teleports a character: the real frame-to-frame jump is bounded while a
    # rollout is scored, but not over all frames.
    jumps = np.abs(np.diff(trace.true_xy, axis=1)).max(axis=(2, 3))
    assert jumps[trace.valid[:, 1:]].max() < 30
    assert jumps.max() > 100
    # Persistence never predicts a death.
    assert report.stock_loss["predicted_events"] == 0
