"""Encoding v2.2: dimensions, the reference's field definitions on real games, anomaly counting."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from meleewm_core.config import EncodingConfig
from meleewm_core.encoding import BUTTON_BITS, BUTTON_FIELDS, EncodingError, EncodingSpec, encode_game
from meleewm_core.manifest import read_manifest
from meleewm_core.shards import _read_game


def test_v22_dimensions_and_flag_dimensions():
    spec = EncodingSpec(EncodingConfig())
    assert (spec.continuous_dim, spec.binary_dim, spec.controller_dim) == (13, 3, 13)
    assert spec.float_per_player == 29 and spec.float_per_frame == 58
    assert spec.int_per_frame == 15 and spec.ctrl_conditioning_dim == 26
    assert spec.frame_embed_dim == 182  # 89 per player x 2 + stage 4
    assert spec.model_input_dim(10) == 1846

    state_age = EncodingSpec(EncodingConfig(state_age_as_embed=True))
    assert state_age.float_per_player == 28 and state_age.int_per_player == 8
    assert state_age.frame_embed_dim == 196 and state_age.model_input_dim(10) == 1986
    assert EncodingSpec(EncodingConfig(press_events=True)).ctrl_conditioning_dim == 42


def _first_game(root):
    row = read_manifest(root).filter("eligible").sort("md5").row(0, named=True)
    ports = tuple(sorted(p["port"] for p in row["players"]))
    return row["md5"], ports, row["stage"]


def test_real_game_matches_reference_definitions(parsed_root):
    """Recompute fields the way the reference did (Python lists through numpy dtypes) and compare bits."""
    md5, ports, stage = _first_game(parsed_root)
    spec = EncodingSpec(EncodingConfig())
    encoded = encode_game(_read_game(parsed_root, md5, ports), ports, stage, spec, game=md5)
    table = pq.read_table(parsed_root.game_path(md5))
    assert encoded.floats.shape == (table.num_rows, 58) and encoded.floats.dtype == np.float32

    for player, port in enumerate(ports):

        def col(name: str, port: int = port) -> list:
            return table.column(f"ports.P{port}.leader.{name}").to_pylist()

        # percent went through uint16 in the reference (stale-move fractions dropped)
        percent = np.array(col("post.percent"), dtype=np.uint16).astype(np.float32) * 0.01
        assert np.array_equal(encoded.floats[:, spec.float_col(player, "percent")], percent)
        x = np.array(col("post.position.x"), dtype=np.float32) * 0.05
        assert np.array_equal(encoded.floats[:, spec.float_col(player, "x")], x)
        # combo_count was multiplied as int64, i.e. in float64, then cast to float32
        combo = (np.array(col("post.combo_count"), dtype=np.int64) * 0.1).astype(np.float32)
        assert np.array_equal(encoded.floats[:, spec.float_col(player, "combo_count")], combo)
        facing = (np.array(col("post.direction"), dtype=np.float32) > 0).astype(np.float32)
        assert np.array_equal(encoded.floats[:, spec.float_col(player, "facing")], facing)
        main_x = np.array(col("pre.joystick.x"), dtype=np.float32) / 2.0 + 0.5
        assert np.array_equal(encoded.floats[:, spec.float_col(player, "main_x")], main_x)
        bits = np.array(col("pre.buttons_physical"), dtype=np.uint16)
        for name, bit in zip(BUTTON_FIELDS, BUTTON_BITS, strict=True):
            assert np.array_equal(
                encoded.floats[:, spec.float_col(player, name)], ((bits & bit) > 0).astype(np.float32)
            )
        action = np.clip(np.array(col("post.state"), dtype=np.int64), 0, 399)
        assert np.array_equal(encoded.ints[:, spec.int_col(player, "action")], action)
    assert (encoded.ints[:, spec.stage_col] == stage).all()


def test_out_of_vocab_action_is_counted_not_hidden(tmp_path, replays):
    """Kirby's copy abilities use action ids past 399 (moveTest/id_23.slp reaches 428)."""
    from meleewm_core.parse import parse_paths
    from meleewm_core.store import DataRoot

    root = DataRoot(tmp_path)
    parse_paths(
        [replays / "project-slippi__slippi-js/moveTest/id_23.slp"],
        root,
        source="t",
        workers=1,
        progress=False,
    )
    md5 = next(root.games_dir.glob("*.parquet")).stem
    columns = _read_game(root, md5, (1, 2))
    raw = np.concatenate([columns[f"ports.P{p}.leader.post.state"].to_numpy() for p in (1, 2)])
    expected_oov = int((raw >= 400).sum())
    assert expected_oov > 0

    clamped = encode_game(columns, (1, 2), 32, EncodingSpec(EncodingConfig()), game=md5)
    assert clamped.anomalies["action"]["oov"] == expected_oov
    assert clamped.ints[:, [0, 7]].max() == 399

    wide = encode_game(columns, (1, 2), 32, EncodingSpec(EncodingConfig(action_vocab=538)), game=md5)
    assert "action" not in wide.anomalies and wide.ints[:, [0, 7]].max() == raw.max()

    with pytest.raises(EncodingError, match=rf"{md5}.*action.*0\.\.399"):
        encode_game(columns, (1, 2), 32, EncodingSpec(EncodingConfig(oov_policy="error")), game=md5)


def test_nan_and_garbage_controller_values_are_mapped_and_counted(parsed_root):
    import pyarrow as pa

    md5, ports, stage = _first_game(parsed_root)
    columns = dict(_read_game(parsed_root, md5, ports))
    key = f"ports.P{ports[0]}.leader.post.position.x"
    x = columns[key].to_numpy().copy()
    x[5] = np.nan
    x[6] = np.inf
    columns[key] = pa.array(x)
    trigger = f"ports.P{ports[1]}.leader.pre.triggers_physical.r"
    r = columns[trigger].to_numpy().copy()
    r[:3] = 3.78e22  # what Slippi 0.1/1.0 replays hold there
    columns[trigger] = pa.array(r)

    spec = EncodingSpec(EncodingConfig())
    encoded = encode_game(columns, ports, stage, spec, game=md5)
    assert encoded.anomalies["x"]["nonfinite"] == 2
    assert encoded.floats[5, spec.float_col(0, "x")] == 0 and encoded.floats[6, spec.float_col(0, "x")] == 0
    assert encoded.anomalies["shoulder"]["out_of_range"] == 3
    assert encoded.floats[:3, spec.float_col(1, "shoulder")].tolist() == [1.0, 1.0, 1.0]
    assert np.isfinite(encoded.floats).all()


def test_null_counts_are_per_value_once(parsed_root):
    """BH9 is a Slippi 1.x replay without velocities or hurtbox state: each null is counted once."""
    old_games = []
    for row in read_manifest(parsed_root).iter_rows(named=True):
        ports = tuple(sorted(p["port"] for p in row["players"]))
        columns = _read_game(parsed_root, row["md5"], ports)
        if columns[f"ports.P{ports[0]}.leader.post.hurtbox_state"].null_count:
            old_games.append((row["md5"], ports, row["stage"], columns))
    assert old_games, "the training replays include Slippi 1.x games (BH9, nintendont)"
    for md5, ports, stage, columns in old_games:
        frames = len(columns["frame"])
        encoded = encode_game(columns, ports, stage, EncodingSpec(EncodingConfig()), game=md5)
        for name, source in (("hurtbox", "post.hurtbox_state"), ("self_x_air", "post.velocities.self_x_air")):
            nulls = sum(columns[f"ports.P{p}.leader.{source}"].null_count for p in ports)
            assert encoded.anomalies[name]["null"] == nulls == 2 * frames


def test_action_age_counts_frames_since_the_action_began_and_leaves_other_ids_alone(parsed_root):
    """On a real game: the counter restarts at every action change, counts up by one while the
    action holds, stops at its cap; switching it on adds one categorical per player and does not
    move the shard folder id of encodings without it."""
    from meleewm_core.parse import PARSER_VERSION
    from meleewm_core.shards import encoding_id

    md5, ports, stage = _first_game(parsed_root)
    config = EncodingConfig(action_age_as_embed=True, action_age_embed_vocab=16)
    spec = EncodingSpec(config)
    assert spec.int_per_player == EncodingSpec(EncodingConfig()).int_per_player + 1
    ints = encode_game(_read_game(parsed_root, md5, ports), ports, stage, spec, game=md5).ints
    action, age = ints[:, spec.int_col(0, "action")], ints[:, spec.int_col(0, "action_age")]
    changed = np.flatnonzero(action[1:] != action[:-1]) + 1
    assert len(changed) > 10 and (age[changed] == 0).all()
    held = np.flatnonzero(action[1:] == action[:-1]) + 1
    assert (age[held] == np.minimum(age[held - 1] + 1, 15)).all()
    assert age.max() == 15

    plain = EncodingConfig()
    assert encoding_id(plain, PARSER_VERSION) != encoding_id(config, PARSER_VERSION)
    assert "action_age_as_embed" not in plain.identity_dump()
