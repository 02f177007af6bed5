"""FrameStackMLP: the v2.2 parameter count, sizes under each flag, shapes, closing the loop."""

from __future__ import annotations

import itertools

import pytest
import torch

from meleewm_core.config import EncodingConfig, ModelConfig
from meleewm_core.data import Batch
from meleewm_core.encoding import EncodingSpec
from meleewm_core.metrics import MetricAccumulator
from meleewm_core.models import MODELS, build_model, count_parameters, next_frame

# (state_age_as_embed, press_events, heads) -> parameters; documented in the README (World model: Models and heads).
PARAMETERS = {
    (False, False, "v22"): 1_304_182,
    (True, False, "v22"): 1_377_062,
    (False, True, "v22"): 1_312_374,
    (True, True, "v22"): 1_385_254,
    (False, False, "full_state"): 1_378_198,
    (True, False, "full_state"): 1_527_664,
    (False, True, "full_state"): 1_386_390,
    (True, True, "full_state"): 1_535_856,
}


def test_v22_defaults_have_exactly_the_reference_parameter_count():
    assert count_parameters(build_model(EncodingConfig(), ModelConfig())) == 1_304_182


@pytest.mark.parametrize(
    ("state_age", "press", "heads"),
    list(itertools.product([False, True], [False, True], ["v22", "full_state"])),
)
def test_every_flag_combination_has_its_documented_size_and_agreeing_shapes(state_age, press, heads):
    encoding = EncodingConfig(state_age_as_embed=state_age, press_events=press)
    model = build_model(encoding, ModelConfig(heads=heads))
    assert count_parameters(model) == PARAMETERS[(state_age, press, heads)]

    spec = EncodingSpec(encoding)
    batch = 4
    ints = torch.zeros(batch, 10, spec.int_per_frame, dtype=torch.long)
    outputs = model(
        torch.rand(batch, 10, spec.float_per_frame), ints, torch.rand(batch, spec.ctrl_conditioning_dim)
    )
    layout = model.layout
    assert outputs["continuous_delta"].shape == (batch, len(layout.continuous_cols))
    assert outputs["binary_logits"].shape == (batch, 6)
    for key, _, _, vocab in layout.logit_heads:
        assert outputs[key].shape == (batch, vocab)
    expected_categoricals = set(spec.categorical_fields) if heads == "full_state" else {"action", "jumps"}
    assert {name for _, _, name, _ in layout.logit_heads} == expected_categoricals


def test_next_frame_feeds_a_rollout_with_predicted_and_carried_fields():
    encoding = EncodingConfig()
    spec = EncodingSpec(encoding)
    model = build_model(encoding, ModelConfig(heads="full_state")).eval()
    float_ctx = torch.rand(2, 10, spec.float_per_frame)
    int_ctx = torch.randint(0, 3, (2, 10, spec.int_per_frame))
    ctrl = torch.rand(2, spec.ctrl_conditioning_dim)
    outputs = model(float_ctx, int_ctx, ctrl)
    floats, ints = next_frame(outputs, float_ctx[:, -1], int_ctx[:, -1], ctrl, model.layout)
    x = spec.float_col(0, "x")
    delta_index = model.layout.continuous.index("x")
    assert torch.allclose(floats[:, x], float_ctx[:, -1, x] + outputs["continuous_delta"][:, delta_index])
    assert torch.equal(floats[:, spec.controller_cols], ctrl[:, :26])
    assert torch.equal(ints[:, spec.int_col(1, "action")], outputs["p1_action_logits"].argmax(-1))
    assert torch.equal(ints[:, spec.stage_col], int_ctx[:, -1, spec.stage_col])
    # The next step accepts it as context.
    model(
        torch.cat([float_ctx[:, 1:], floats[:, None]], 1), torch.cat([int_ctx[:, 1:], ints[:, None]], 1), ctrl
    )


def test_unknown_model_name_lists_the_registry():
    with pytest.raises(ValueError, match="frame_stack_mlp"):
        build_model(EncodingConfig(), ModelConfig(name="mamba2"))
    assert "frame_stack_mlp" in MODELS


def test_persistence_prior_starts_at_repeat_the_last_frame_and_gate_zeroes_unchanged_fields():
    encoding = EncodingConfig()
    spec = EncodingSpec(encoding)
    model = build_model(
        encoding, ModelConfig(heads="full_state", persistence_prior=True, delta_gate=True)
    ).eval()
    float_ctx = torch.rand(8, 10, spec.float_per_frame)
    binary_cols = model.layout.binary_cols
    float_ctx[:, :, binary_cols] = float_ctx[:, :, binary_cols].round()
    int_ctx = torch.randint(0, 3, (8, 10, spec.int_per_frame))
    ctrl = torch.rand(8, spec.ctrl_conditioning_dim)
    outputs = model(float_ctx, int_ctx, ctrl)
    floats, ints = next_frame(outputs, float_ctx[:, -1], int_ctx[:, -1], ctrl, model.layout)
    # An untrained model already predicts "nothing changes": deltas 0, binaries and categoricals kept.
    assert torch.equal(outputs["continuous_delta"], torch.zeros_like(outputs["continuous_delta"]))
    assert torch.equal(floats[:, binary_cols], float_ctx[:, -1, binary_cols])
    assert torch.equal(ints, int_ctx[:, -1])

    # Once the delta head predicts movement, the gate applies it only where its logit says "changes".
    num_deltas = outputs["continuous_delta"].shape[1]
    with torch.no_grad():
        model.heads.bias[:num_deltas] = 1.0
    outputs = model(float_ctx, int_ctx, ctrl)
    gated = outputs["continuous_change_logits"] > 0
    assert 0 < gated.sum() < gated.numel()
    assert torch.equal(outputs["continuous_delta"] != 0, gated)
    assert torch.equal(outputs["continuous_delta"][gated], outputs["continuous_delta_raw"][gated])


@pytest.mark.parametrize("autocast", [False, True])
def test_fast_embedding_gives_torchs_output_and_gradient(autocast):
    from meleewm_core.models import layers

    torch.manual_seed(0)
    ours = layers.Embedding(40, 6)
    stock = torch.nn.Embedding(40, 6)
    stock.load_state_dict(ours.state_dict())
    indices = torch.randint(0, 40, (64, 10, 2))
    upstream = torch.randn(64, 10, 2, 6)
    for module in (ours, stock):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = module(indices)
        (out.float() * upstream).sum().backward()
    assert ours.weight.grad.dtype == torch.float32
    tolerance = 5e-2 if autocast else 1e-5  # bf16 rounds each upstream gradient row
    torch.testing.assert_close(ours.weight.grad, stock.weight.grad, atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(ours(indices), stock(indices))


def test_pooled_dropout_drops_the_right_share_keeps_the_mean_and_changes_every_step():
    from meleewm_core.models import layers

    torch.manual_seed(0)
    dropout = layers.Dropout(0.1)
    x = torch.ones(512, 512)
    first, second = dropout(x), dropout(x)
    assert abs((first == 0).float().mean().item() - 0.1) < 0.005
    assert abs(first.mean().item() - 1.0) < 0.01
    assert (first != second).float().mean() > 0.1
    dropout.eval()
    assert torch.equal(dropout(x), x)


def test_untrained_motion_prior_moves_like_constant_velocity_and_gates_never_stop_it():
    encoding = EncodingConfig()
    model = build_model(
        encoding, ModelConfig(heads="full_state", persistence_prior=True, delta_gate=True, motion_prior=True)
    ).eval()
    spec = EncodingSpec(encoding)
    float_ctx = torch.rand(6, 10, spec.float_per_frame)
    ints = torch.zeros(6, 10, spec.int_per_frame, dtype=torch.long)
    outputs = model(float_ctx, ints, torch.rand(6, spec.ctrl_conditioning_dim))
    floats, _ = next_frame(
        outputs, float_ctx[:, -1], ints[:, -1], torch.rand(6, spec.ctrl_conditioning_dim), model.layout
    )
    for player in range(2):
        for name in ("x", "y"):
            col = spec.float_col(player, name)
            expected = 2 * float_ctx[:, -1, col] - float_ctx[:, -2, col]
            torch.testing.assert_close(floats[:, col], expected)
        percent = spec.float_col(player, "percent")
        torch.testing.assert_close(floats[:, percent], float_ctx[:, -1, percent])

    with pytest.raises(ValueError, match="context_len >= 2"):
        build_model(encoding, ModelConfig(motion_prior=True, context_len=1))


def test_normalized_dynamics_standardises_inputs_and_scales_deltas_and_its_units_travel_with_the_weights():
    encoding = EncodingConfig(state_age_as_embed=True, press_events=True, action_age_as_embed=True)
    config = ModelConfig(
        heads="full_state",
        persistence_prior=True,
        delta_gate=True,
        motion_prior=True,
        normalized_dynamics=True,
    )
    model = build_model(encoding, config).eval()
    plain = build_model(encoding, config.model_copy(update={"normalized_dynamics": False}))
    num_deltas = len(model.layout.continuous_cols)
    # The only new weights: the first layer's columns for (K-1) steps of each predicted field's change.
    assert (
        count_parameters(model) - count_parameters(plain)
        == 9 * num_deltas * config.hidden_dim
        == 1_767_968 - 1_657_376
    )

    spec = EncodingSpec(encoding)
    mean, std = torch.rand(spec.float_per_frame) * 10, torch.rand(spec.float_per_frame) * 5
    std[0] = 0.0
    scale = torch.rand(num_deltas) + 0.1
    model.calibrate_dynamics(mean, std, scale)
    float_ctx = torch.rand(3, 10, spec.float_per_frame) * 20
    float_ctx[0, -1, 1] = 1e9
    standard, changes = model.dynamics_inputs(float_ctx)
    expected = (float_ctx[1:] - mean) / std.clamp(min=1e-2)
    torch.testing.assert_close(standard[1:], expected.clamp(-20, 20))
    assert standard[0, -1, 1] == 20 and standard[:, :, 0].abs().max() <= 20
    tracked = float_ctx[:, :, model.layout.continuous_cols]
    torch.testing.assert_close(
        changes.view(3, 9, num_deltas), ((tracked[:, 1:] - tracked[:, :-1]) / scale).clamp(-20, 20)
    )

    # The heads answer in typical-change units: a bias of 1 on a (gate-closed) field moves it by its scale.
    ints = torch.zeros(3, 10, spec.int_per_frame, dtype=torch.long)
    ctrl = torch.rand(3, spec.ctrl_conditioning_dim)
    with torch.no_grad():
        model.heads.weight[:num_deltas] = 0.0
        model.heads.bias[:num_deltas] = 1.0
    raw = model(float_ctx, ints, ctrl)["continuous_delta_raw"]
    percent = model.layout.continuous_cols.index(spec.float_col(0, "percent"))
    torch.testing.assert_close(raw[:, percent], scale[percent].expand(3))

    reloaded = build_model(encoding, config).eval()
    reloaded.load_state_dict(model.state_dict())
    assert torch.equal(reloaded.float_std, std.clamp(min=1e-2)) and torch.equal(reloaded.delta_scale, scale)
    torch.testing.assert_close(
        reloaded(float_ctx, ints, ctrl)["continuous_delta"], model(float_ctx, ints, ctrl)["continuous_delta"]
    )


def test_motion_gate_lets_a_closed_gate_hold_position_where_the_prior_alone_would_move_it():
    encoding = EncodingConfig()
    spec = EncodingSpec(encoding)
    config = ModelConfig(heads="full_state", persistence_prior=True, delta_gate=True, motion_prior=True)
    always_open = build_model(encoding, config).eval()
    gated = build_model(encoding, config.model_copy(update={"motion_gate": True})).eval()
    gated.load_state_dict(always_open.state_dict())
    layout = gated.layout
    slots = layout.position_slots
    with torch.no_grad():
        gated.heads.weight[-len(layout.continuous_cols) :] = 0.0
        gate_bias = gated.heads.bias[-len(layout.continuous_cols) :]
        gate_bias[:] = -5.0
        gate_bias[slots[0]] = 5.0  # player 0's x is said to move, every other field to stay
    float_ctx = torch.rand(4, 10, spec.float_per_frame)
    ints = torch.zeros(4, 10, spec.int_per_frame, dtype=torch.long)
    ctrl = torch.rand(4, spec.ctrl_conditioning_dim)
    moved = float_ctx[:, -1, layout.continuous_cols] - float_ctx[:, -2, layout.continuous_cols]
    held = gated(float_ctx, ints, ctrl)["continuous_delta"]
    torch.testing.assert_close(held[:, slots[0]], moved[:, slots[0]])
    assert torch.equal(held[:, slots[1:]], torch.zeros(4, len(slots) - 1))
    torch.testing.assert_close(
        always_open(float_ctx, ints, ctrl)["continuous_delta"][:, slots], moved[:, slots]
    )

    with pytest.raises(ValueError, match="motion_gate needs model.delta_gate"):
        build_model(encoding, ModelConfig(motion_prior=True, motion_gate=True))


def test_binary_flip_tables_flip_where_the_tables_say_and_held_categoricals_keep_their_last_value():
    encoding = EncodingConfig(state_age_as_embed=True)
    spec = EncodingSpec(encoding)
    config = ModelConfig(
        heads="full_state",
        persistence_prior=True,
        binary_flip_tables=True,
        held_categoricals=("ground",),
    )
    model = build_model(encoding, config).eval()
    turn, dash, fox, age = 18, 20, 1, 7
    facing, on_ground = 0, 2
    with torch.no_grad():
        # Every head says: player 0 dashes next at state_age 7 and stands on ground 5.
        for key, size in (("p0_action_logits", dash), ("p0_state_age_logits", age), ("p0_ground_logits", 5)):
            model.heads.bias[model._head_slice(key)] = 0.0
            model.heads.bias[model._head_slice(key).start + size] = 50.0
    on_change = torch.zeros_like(model.flips_on_change)
    on_change[turn, dash, facing] = True
    on_stay = torch.zeros_like(model.flips_on_stay)
    on_stay[fox, dash, age, on_ground] = True
    model.calibrate_flip_tables(on_change, on_stay)

    float_ctx = torch.zeros(3, 10, spec.float_per_frame)
    ints = torch.zeros(3, 10, spec.int_per_frame, dtype=torch.long)
    ints[:, :, spec.int_col(0, "character")] = fox
    ints[:, :, spec.int_col(0, "ground")] = 2
    ints[0, -1, spec.int_col(0, "action")] = turn  # turn -> dash: facing flips
    ints[1, -1, spec.int_col(0, "action")] = dash  # dash stays, at age 7: on_ground flips
    ints[2, -1, spec.int_col(0, "action")] = 14  # wait -> dash: no table entry, nothing flips
    float_ctx[:, -1, spec.float_col(0, "facing")] = 1.0
    float_ctx[:, -1, spec.float_col(0, "on_ground")] = 1.0
    outputs = model(float_ctx, ints, torch.rand(3, spec.ctrl_conditioning_dim))
    assert torch.equal(outputs["p0_action_logits"].argmax(1), torch.full((3,), dash))
    binaries = outputs["binary_logits"][:, :3] > 0  # player 0's facing, invulnerable, on_ground
    assert binaries.tolist() == [[False, False, True], [True, False, False], [True, False, True]]
    assert torch.equal(outputs["p0_ground_logits"].argmax(1), torch.full((3,), 2))
    # The heads still train: the loss reaches the binary and ground heads through their own logits.
    from meleewm_core.config import LossWeights
    from meleewm_core.metrics import compute_loss

    targets = Batch(float_ctx, ints, torch.rand(3, spec.ctrl_conditioning_dim), float_ctx[:, -1], ints[:, -1])
    loss, _ = compute_loss(outputs, targets, model.layout, LossWeights())
    grad = torch.autograd.grad(loss, model.heads.weight)[0]
    for key in ("binary_logits", "p0_ground_logits"):
        assert grad[model._head_slice(key)].abs().sum() > 0, key

    with pytest.raises(ValueError, match="held_categoricals"):
        build_model(encoding, ModelConfig(heads="full_state", held_categoricals=("stage_name",)))
    with pytest.raises(ValueError, match="state_age_as_embed"):
        build_model(EncodingConfig(), ModelConfig(heads="full_state", binary_flip_tables=True))


def table_model(**options) -> tuple[EncodingConfig, EncodingSpec, torch.nn.Module]:
    """A full_state model with both age embeddings and ``options``, in eval mode."""
    encoding = EncodingConfig(state_age_as_embed=True, action_age_as_embed=True)
    model = build_model(encoding, ModelConfig(heads="full_state", **options)).eval()
    return encoding, EncodingSpec(encoding), model


def test_respawn_sequence_fires_the_death_timer_and_sets_the_known_fields_of_a_respawning_player():
    encoding, spec, model = table_model(respawn_sequence=True)
    dead_down, rebirth, wait, stage = 0, 12, 14, 3
    slots = model.layout.continuous_cols
    percent, y = (slots.index(spec.float_col(0, name)) for name in ("percent", "y"))
    timers = torch.full_like(model.timed_next_action, -1)
    timers[dead_down, 59] = rebirth
    values, known = torch.zeros_like(model.respawn_values), torch.zeros_like(model.respawn_known)
    values[stage, y], known[stage, [percent, y]] = 4.0, True
    model.calibrate_respawn(timers, values, known)

    float_ctx = torch.rand(3, 10, spec.float_per_frame)
    ints = torch.zeros(3, 10, spec.int_per_frame, dtype=torch.long)
    ints[:, :, spec.stage_col] = stage
    ints[:, :, spec.int_col(1, "action")] = wait
    ints[:, -1, spec.int_col(0, "action")] = dead_down
    ints[:, -1, spec.int_col(0, "action_age")] = torch.tensor([59, 30, 59])
    ints[2, -1, spec.int_col(0, "action")] = wait  # alive at the same age: no timer
    ctrl = torch.rand(3, spec.ctrl_conditioning_dim)
    with torch.no_grad():
        outputs = model(float_ctx, ints, ctrl)
        plain = build_model(encoding, ModelConfig(heads="full_state")).eval()
        plain.load_state_dict(model.state_dict(), strict=False)
        untouched = plain(float_ctx, ints, ctrl)
    assert outputs["p0_action_logits"].argmax(1)[0] == rebirth
    assert outputs["p0_action_age_logits"].argmax(1)[0] == 0
    assert (outputs["p0_action_logits"].argmax(1)[1:] != rebirth).all()
    last = float_ctx[:, -1]
    predicted = (
        last[0, [spec.float_col(0, "percent"), spec.float_col(0, "y")]]
        + outputs["continuous_delta"][0, [percent, y]]
    )
    assert torch.allclose(predicted, torch.tensor([0.0, 4.0]))
    # Fields the tables do not know, the rows without a respawn and the other player keep the heads' guesses.
    keep = torch.ones_like(outputs["continuous_delta"], dtype=torch.bool)
    keep[0, [percent, y]] = False
    assert torch.allclose(outputs["continuous_delta"][keep], untouched["continuous_delta"][keep])
    assert torch.equal(outputs["p1_action_logits"], untouched["p1_action_logits"])
    # Training never sees them (rollout training would feed the teleport to the motion prior).
    with torch.no_grad():
        torch.manual_seed(0)
        training = model.train()(float_ctx, ints, ctrl)
        torch.manual_seed(0)
        plain_training = plain.train()(float_ctx, ints, ctrl)
    for key in ("continuous_delta", "p0_action_logits"):
        assert torch.equal(training[key], plain_training[key]), key

    with pytest.raises(ValueError, match="action_age_as_embed"):
        build_model(EncodingConfig(), ModelConfig(heads="full_state", respawn_sequence=True))


def test_blast_zones_kill_a_living_player_predicted_past_a_known_side_and_take_the_stock():
    encoding, spec, model = table_model(blast_zones=True)
    stage, right, bottom, dead_right, dead_down, wait = 3, 1, 2, 2, 0, 14
    bounds, known = torch.zeros_like(model.blast_bounds), torch.zeros_like(model.blast_known)
    bounds[stage, right], known[stage, right] = 5.0, True
    bounds[stage, bottom] = 10.0  # would kill everyone, but nobody died through the bottom there
    model.calibrate_blast_zones(
        bounds, known, torch.tensor([1, dead_right, dead_down, 4]), torch.tensor([True, True, True, False])
    )
    float_ctx = torch.zeros(3, 10, spec.float_per_frame)
    ints = torch.zeros(3, 10, spec.int_per_frame, dtype=torch.long)
    ints[:, :, spec.stage_col] = stage
    ints[:, :, [spec.int_col(p, "action") for p in range(2)]] = wait
    float_ctx[:, -1, spec.float_col(0, "x")] = torch.tensor([9.0, 1.0, 9.0])
    ints[2, -1, spec.int_col(0, "action")] = dead_down  # already dead: not killed again
    float_ctx[:, -1, spec.float_col(0, "stocks")] = 3 * spec.scale("stocks")
    with torch.no_grad():
        outputs = model(float_ctx, ints, torch.rand(3, spec.ctrl_conditioning_dim))
    actions = outputs["p0_action_logits"].argmax(1)
    assert actions[0] == dead_right and actions[1] != dead_right and actions[2] != dead_right
    assert outputs["p0_state_age_logits"].argmax(1)[0] == 0
    stocks = model.layout.continuous_cols.index(spec.float_col(0, "stocks"))
    lost = outputs["continuous_delta"][:, stocks] / spec.scale("stocks")
    assert torch.isclose(lost[0], torch.tensor(-1.0)) and (lost[1:].abs() < 0.5).all()

    with pytest.raises(ValueError, match="full_state"):
        build_model(encoding, ModelConfig(blast_zones=True))


# The air-physics scene: character FALLER on stage SCENE_STAGE, whose floor (ground FLOOR) is the
# line y = 0 for x in [-5, 5] (encoded); the fall and jump actions it uses.
FALLER, SCENE_STAGE, FLOOR = 2, 3, 2
FALL_ACTION, JUMP_F, KNEE_BEND = 29, 25, 24


def air_model(surfaces=((FLOOR, 0.0, (-5.0, 5.0)),), **options):
    """A ``table_model`` with ``air_physics`` and the given surfaces (ground id, height in game
    units, x extent encoded) on SCENE_STAGE; FALLER falls at 2 and fast-falls at 3 game units a frame and
    takes off from a JUMP_F at 3.1 with a jump button held."""
    encoding, spec, model = table_model(air_physics=True, stage_surfaces=True, delta_gate=True, **options)
    line, extent = torch.zeros_like(model.surface_line), torch.zeros_like(model.surface_extent)
    known = torch.zeros_like(model.surface_known)
    for ground, height, span in surfaces:
        line[SCENE_STAGE, ground, 0] = height * spec.scale("y")
        extent[SCENE_STAGE, ground], known[SCENE_STAGE, ground] = torch.tensor(span), True
    model.calibrate_surfaces(line, extent, known)
    fall_speeds, fall_known = torch.zeros_like(model.fall_speeds), torch.zeros_like(model.fall_known)
    fall_speeds[FALLER], fall_known[FALLER] = torch.tensor([2.0, 3.0]), True  # fall, fast fall
    take_offs, take_off_known = torch.zeros_like(model.take_offs), torch.zeros_like(model.take_off_known)
    take_offs[FALLER, 0, 1], take_off_known[FALLER, 0, 1] = 3.1, True  # JUMP_F, X or Y held
    model.calibrate_air_physics(fall_speeds, fall_known, take_offs, take_off_known)
    return encoding, spec, model


def air_step(
    net,
    spec,
    predicted_action,
    last_action,
    speed,
    y,
    on_ground,
    *,
    x=None,
    knockback=(0.0, 0.0),
    held=False,
    stick=0.5,
    grounded=False,
    ground=FLOOR,
    air_speed=None,
    stick_x=0.5,
):
    """Player 0's (FALLER's) next frame on SCENE_STAGE: self_y and y in game units, knockback_y,
    the on_ground logit, the predicted ground id and action, with the heads set to predict
    ``predicted_action``, airborne (or ``grounded``), and no change of any continuous field. Per
    row: the last ``speed``, ``y`` (game units), ``on_ground``, ``x`` (encoded) and ``air_speed``
    (self_x_air, game units); the main stick's y goes from neutral to ``stick`` (encoded: 0 is
    fully down), its x is ``stick_x``."""
    rows = len(speed)
    float_ctx = torch.zeros(rows, 10, spec.float_per_frame)
    ints = torch.zeros(rows, 10, spec.int_per_frame, dtype=torch.long)
    ints[:, :, spec.stage_col] = SCENE_STAGE
    ints[:, :, spec.int_col(0, "character")] = FALLER
    ints[:, :, spec.int_col(0, "ground")] = ground
    ints[:, -1, spec.int_col(0, "action")] = last_action
    last = float_ctx[:, -1]
    last[:, spec.float_col(0, "self_y")] = torch.tensor(speed) * spec.scale("self_y")
    last[:, spec.float_col(0, "y")] = torch.tensor(y) * spec.scale("y")
    last[:, spec.float_col(0, "on_ground")] = torch.tensor(on_ground)
    if x is not None:
        last[:, spec.float_col(0, "x")] = torch.tensor(x)
    if air_speed is not None:
        last[:, spec.float_col(0, "self_x_air")] = torch.tensor(air_speed) * spec.scale("self_x_air")
    last[:, spec.float_col(0, "knockback_x")] = knockback[0] * spec.scale("knockback_x")
    last[:, spec.float_col(0, "knockback_y")] = knockback[1] * spec.scale("knockback_y")
    last[:, spec.float_col(0, "main_y")] = 0.5
    ctrl = torch.zeros(rows, spec.ctrl_conditioning_dim)
    ctrl[:, spec.controller_cols.index(spec.float_col(0, "main_y"))] = stick
    ctrl[:, spec.controller_cols.index(spec.float_col(0, "main_x"))] = torch.as_tensor(stick_x)
    ctrl[:, spec.controller_cols.index(spec.float_col(0, "X"))] = float(held)
    with torch.no_grad():
        net.heads.weight.zero_()
        net.heads.bias.zero_()
        net.heads.bias[net._head_slice("p0_action_logits").start + predicted_action] = 40.0
        on_ground_logit = net.layout.binary_cols.index(spec.float_col(0, "on_ground"))
        net.heads.bias[net._head_slice("binary_logits").start + on_ground_logit] = 40.0 if grounded else -40.0
        outputs = net(float_ctx, ints, ctrl)
    slot = {
        n: net.layout.continuous_cols.index(spec.float_col(0, n))
        for n in ("self_y", "y", "knockback_y", "self_x_air", "x")
    }
    delta = outputs["continuous_delta"]

    def now(name):
        return (last[:, spec.float_col(0, name)] + delta[:, slot[name]]) / spec.scale(name)

    return {
        "self_y": now("self_y"),
        "y": now("y"),
        "knockback_y": now("knockback_y"),
        "self_x_air": now("self_x_air"),
        "x": now("x"),
        "on_ground": outputs["binary_logits"][:, on_ground_logit],
        "ground": outputs["p0_ground_logits"].argmax(1),
        "action": outputs["p0_action_logits"].argmax(1),
    }


def test_air_physics_pins_a_falling_or_jumping_players_vertical_speed_and_lands_on_the_floor():
    from meleewm_core.encoding import KNOCKBACK_DECAY

    encoding, spec, model = air_model()
    # At the fall speed, fast falling with a decaying knockback, mid-arc (no rule pins it: the
    # heads' "no change"), at the fall speed one unit above the floor (lands on it).
    step = air_step(
        model,
        spec,
        FALL_ACTION,
        FALL_ACTION,
        [-2.0, -3.0, -1.0, -2.0],
        [50.0, 50.0, 50.0, 1.0],
        [0.0] * 4,
        knockback=(0.0, 1.0),
    )
    keep = 1 - KNOCKBACK_DECAY
    torch.testing.assert_close(step["self_y"], torch.tensor([-2.0, -3.0, -1.0, 0.0]))
    torch.testing.assert_close(
        step["y"], torch.tensor([48.0 + keep, 47.0 + keep, 50.0, 0.0]), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(step["knockback_y"], torch.tensor([keep, keep, 1.0, keep]), atol=1e-5, rtol=0)
    assert (step["on_ground"][:3] < 0).all() and step["on_ground"][3] > 0
    # A jump's first frame off the ground: the measured take-off speed with a jump button held; the
    # heads' guess where the take-off is unknown (released) or the jump already under way.
    for held, started, expected in ((True, True, 3.1), (False, True, 0.0), (True, False, 0.0)):
        step = air_step(
            model, spec, JUMP_F, KNEE_BEND if started else JUMP_F, [0.0], [0.0], [float(started)], held=held
        )
        torch.testing.assert_close(step["self_y"], torch.tensor([expected]))
        torch.testing.assert_close(step["y"], torch.tensor([expected]), atol=1e-4, rtol=0)
    # A tap down switches the fall speed to the fast fall; mid-arc no rule pins the speed.
    step = air_step(model, spec, FALL_ACTION, FALL_ACTION, [-2.0, -1.0], [50.0, 50.0], [0.0] * 2, stick=0.0)
    torch.testing.assert_close(step["self_y"], torch.tensor([-3.0, -1.0]))
    # Training keeps the heads' own predictions.
    model.train()
    step = air_step(model, spec, FALL_ACTION, FALL_ACTION, [-2.0], [50.0], [0.0])
    assert step["self_y"].item() == -2.0 and step["y"].item() == 50.0

    with pytest.raises(ValueError, match="stage_surfaces"):
        build_model(encoding, ModelConfig(heads="full_state", air_physics=True))


def test_air_drift_gives_melees_next_air_speed_and_leaves_x_to_the_heads():
    from meleewm_core.models.mlp import air_drift_speed

    drift = torch.tensor([0.02, 0.8, 0.05, 0.02])  # friction, top speed, per stick, constant
    # Neutral stick: friction to 0; pushed: toward stick x top speed, capped there; past a weaker
    # stick's target the same way: friction down to it; the other way: the push.
    speed = torch.tensor([0.5, 0.01, 0.0, 0.78, 1.0, 0.5])
    stick = torch.tensor([0.1, -0.2, 1.0, 1.0, 0.5, -1.0])
    torch.testing.assert_close(
        air_drift_speed(speed, stick, drift.expand(6, -1)), torch.tensor([0.48, 0.0, 0.07, 0.8, 0.98, 0.43])
    )
    encoding, spec, model = air_model(air_drift=True)
    constants, known = torch.zeros_like(model.drift), torch.zeros_like(model.drift_known)
    constants[FALLER], known[FALLER] = drift, True
    model.calibrate_air_drift(constants, known)
    x = [0.2, 0.2, 0.2]
    step = air_step(
        model, spec, FALL_ACTION, FALL_ACTION, [-1.0] * 3, [50.0] * 3, [0.0] * 3,
        x=x, air_speed=[0.5, 0.0, 0.5], stick_x=torch.tensor([0.5, 1.0, 0.0]),
    )  # fmt: skip
    torch.testing.assert_close(step["self_x_air"], torch.tensor([0.48, 0.07, 0.43]), atol=1e-5, rtol=0)
    torch.testing.assert_close(step["x"] * spec.scale("x"), torch.tensor(x))  # the heads' "no change"
    # Grounded, taking off (from the ground or a double jump: the jump sets its own speed), or in
    # training: the heads' own speed.
    step = air_step(
        model, spec, FALL_ACTION, FALL_ACTION, [0.0], [0.0], [1.0], air_speed=[0.5], grounded=True
    )
    assert step["self_x_air"].item() == pytest.approx(0.5)
    step = air_step(model, spec, JUMP_F, KNEE_BEND, [0.0], [0.0], [1.0], air_speed=[0.5], stick_x=1.0)
    assert step["self_x_air"].item() == pytest.approx(0.5)
    double_jump = 27
    step = air_step(
        model, spec, double_jump, FALL_ACTION, [-1.0], [50.0], [0.0], air_speed=[0.5], stick_x=1.0
    )
    assert step["self_x_air"].item() == pytest.approx(0.5)
    model.train()
    step = air_step(
        model, spec, FALL_ACTION, FALL_ACTION, [-1.0], [50.0], [0.0], air_speed=[0.5], stick_x=1.0
    )
    assert step["self_x_air"].item() == pytest.approx(0.5)

    with pytest.raises(ValueError, match="air_physics"):
        build_model(encoding, ModelConfig(heads="full_state", air_drift=True))


def test_rules_in_training_roll_training_out_with_the_rules_and_keep_gradients_finite():
    # A tap down at the fall speed: the air rule's fast fall, in training too with the option.
    for option, expected in ((False, -2.0), (True, -3.0)):
        _, spec, model = air_model(rules_in_training=option)
        model.train()
        step = air_step(model, spec, FALL_ACTION, FALL_ACTION, [-2.0], [50.0], [0.0], stick=0.0)
        assert step["self_y"].item() == pytest.approx(expected)
    # Rollout training differentiates through predicted frames, here one with no knockback, where
    # the rule's knockback decay divides by the knockback's length.
    float_ctx = torch.zeros(2, 10, spec.float_per_frame)
    float_ctx[:, :, spec.float_col(0, "self_y")] = -2.0 * spec.scale("self_y")
    float_ctx[:, :, spec.float_col(0, "y")] = 50.0 * spec.scale("y")
    float_ctx.requires_grad_(True)
    ints = torch.zeros(2, 10, spec.int_per_frame, dtype=torch.long)
    ints[:, :, spec.stage_col] = SCENE_STAGE
    ints[:, :, spec.int_col(0, "character")] = FALLER
    ints[:, :, spec.int_col(0, "action")] = FALL_ACTION
    outputs = model(float_ctx, ints, torch.full((2, spec.ctrl_conditioning_dim), 0.5))
    outputs["continuous_delta"].sum().backward()
    assert float_ctx.grad is not None and torch.isfinite(float_ctx.grad).all()


def test_ground_friction_slows_a_grounded_player_in_a_sliding_action_only():
    encoding, spec, model = table_model(ground_friction=True)
    character, wait, dash = 2, 14, 20
    friction, sliding = torch.zeros_like(model.friction), torch.zeros_like(model.sliding)
    friction[character], sliding[character, wait] = 0.08, True
    model.calibrate_ground_friction(friction, sliding)
    rows = 5
    float_ctx = torch.zeros(rows, 10, spec.float_per_frame)
    ints = torch.zeros(rows, 10, spec.int_per_frame, dtype=torch.long)
    ints[:, :, spec.int_col(0, "character")] = character
    ints[:, :, spec.int_col(0, "action")] = wait
    ints[3, :, spec.int_col(0, "action")] = dash  # an action it does not slide in
    last = float_ctx[:, -1]
    last[:, spec.float_col(0, "on_ground")] = 1.0
    last[4, spec.float_col(0, "on_ground")] = 0.0  # airborne
    speeds = torch.tensor([1.0, -0.5, 0.05, 1.0, 1.0])
    last[:, spec.float_col(0, "self_x_ground")] = speeds * spec.scale("self_x_ground")
    slot = model.layout.continuous_cols.index(spec.float_col(0, "self_x_ground"))
    on_ground = model.layout.binary_cols.index(spec.float_col(0, "on_ground"))

    def predicted_speed(action: int) -> torch.Tensor:
        with torch.no_grad():
            model.heads.weight.zero_()
            model.heads.bias.zero_()
            model.heads.bias[model._head_slice("p0_action_logits").start + action] = 40.0
            model.heads.bias[model._head_slice("binary_logits").start + on_ground] = 40.0
            outputs = model(float_ctx, ints, torch.zeros(rows, spec.ctrl_conditioning_dim))
        return speeds + outputs["continuous_delta"][:, slot] / spec.scale("self_x_ground")

    # Slowed by the friction down to 0 (either way), in the sliding action only, on the ground only.
    torch.testing.assert_close(predicted_speed(wait), torch.tensor([0.92, -0.42, 0.0, 1.0, 1.0]))
    # A predicted change of action is the heads' (no change of speed).
    torch.testing.assert_close(predicted_speed(dash), speeds)
    model.train()
    torch.testing.assert_close(predicted_speed(wait), speeds)

    with pytest.raises(ValueError, match="ground speed head"):
        build_model(encoding, ModelConfig(ground_friction=True))


def test_ecb_landing_lands_a_fall_only_once_the_ecb_crosses_and_lets_the_stick_drop_through_a_platform():
    platform = 4
    surfaces = ((FLOOR, 0.0, (-5.0, 5.0)), (platform, 3.0, (-1.0, 1.0)))
    encoding, spec, model = air_model(surfaces, ecb_landing=True, held_categoricals=("ground",))
    depth, known = (
        torch.zeros_like(model.landing_depth),
        torch.zeros_like(model.landing_depth, dtype=torch.bool),
    )
    depth[FALLER, FALL_ACTION], known[FALLER, FALL_ACTION] = 2.0, True
    passable = torch.zeros_like(model.surface_passable)
    passable[SCENE_STAGE, platform] = True
    landing_action = torch.full_like(model.landing_action, -1)
    landing_action[FALL_ACTION] = 42
    model.calibrate_ecb_landing(depth, known, passable, landing_action)

    def fall(y, x, stick=0.5):
        return air_step(
            model, spec, FALL_ACTION, FALL_ACTION, [-2.0] * len(y), y, [0.0] * len(y), x=x, stick=stick
        )

    # Over the floor, one unit above it: the position sinks to -1 and the ECB, 2 units higher,
    # is still above the line; half a unit below it the ECB crosses and the player lands.
    # Over the platform (y = 3) the same, one level up.
    step = fall([1.0, -0.5, 4.0, 2.5], [-4.0, -4.0, 0.0, 0.0])
    torch.testing.assert_close(step["y"], torch.tensor([-1.0, 0.0, 2.0, 3.0]), atol=1e-4, rtol=0)
    assert (step["on_ground"] > 0).tolist() == [False, True, False, True]
    assert step["action"].tolist() == [FALL_ACTION, 42, FALL_ACTION, 42]  # the fall's Landing
    # The stick held down drops through the platform, not through the floor (a tap down from
    # the fall speed: the fast fall, 3 a frame).
    step = fall([2.5, -0.5], [0.0, -4.0], stick=0.0)
    assert (step["on_ground"] > 0).tolist() == [False, True]
    torch.testing.assert_close(step["y"], torch.tensor([-0.5, 0.0]), atol=1e-4, rtol=0)

    # A player the heads land (Landing, grounded) one unit below the floor's line is put on it
    # coming down, within its ECB's depth; not going up, and not in training.
    def land(speed):
        return air_step(model, spec, 42, FALL_ACTION, [speed], [-1.0], [0.0], x=[-4.0], grounded=True)[
            "y"
        ].item()

    assert abs(land(-2.0)) < 1e-4 and abs(land(1.0) + 1.0) < 1e-4
    model.train()
    assert abs(land(-2.0) + 1.0) < 1e-4
    model.eval()
    # Without the rule's depths the position's crossing lands the player.
    model.calibrate_ecb_landing(depth, torch.zeros_like(known), passable, model.landing_action)
    assert fall([1.0], [-4.0])["on_ground"].item() > 0

    with pytest.raises(ValueError, match="stage_surfaces"):
        build_model(encoding, ModelConfig(heads="full_state", ecb_landing=True))


def test_ground_from_surfaces_follows_landings_walks_and_respawns_and_holds_otherwise():
    next_segment, dead_down, rebirth = 5, 0, 12
    surfaces = ((FLOOR, 0.0, (-5.0, 5.0)), (next_segment, 0.0, (5.0, 10.0)))
    encoding, spec, model = air_model(
        surfaces, ground_from_surfaces=True, held_categoricals=("ground",), respawn_sequence=True
    )
    timers = torch.full_like(model.timed_next_action, -1)
    timers[dead_down, 59] = rebirth
    model.calibrate_respawn(
        timers, torch.zeros_like(model.respawn_values), torch.zeros_like(model.respawn_known)
    )
    # Players stood on the floor up to x = 5.2 (past its extent): a player at 5.1 is still on it.
    spans = model.surface_extent.clone()
    spans[SCENE_STAGE, FLOOR, 1] = 5.2
    model.calibrate_ground_spans(spans)

    # Landing from the air on the floor (the last ground was the next segment); walking from the
    # floor onto the next segment; standing on the floor; in the air over the floor.
    landing = air_step(
        model, spec, FALL_ACTION, FALL_ACTION, [-2.0], [1.0], [0.0], x=[-4.0], ground=next_segment
    )
    walking = air_step(model, spec, 14, 14, [0.0] * 3, [0.0] * 3, [1.0] * 3, x=[5.5, 4.0, 5.1], grounded=True)
    flying = air_step(
        model, spec, FALL_ACTION, FALL_ACTION, [0.0], [30.0], [0.0], x=[-4.0], ground=next_segment
    )
    assert landing["ground"].tolist() == [FLOOR]
    assert walking["ground"].tolist() == [next_segment, FLOOR, FLOOR]
    assert flying["ground"].tolist() == [next_segment]
    # A respawning player's ground id is 0.
    float_ctx = torch.zeros(1, 10, spec.float_per_frame)
    ints = torch.zeros(1, 10, spec.int_per_frame, dtype=torch.long)
    ints[:, :, spec.stage_col] = SCENE_STAGE
    ints[:, :, spec.int_col(0, "ground")] = FLOOR
    ints[:, -1, spec.int_col(0, "action")] = dead_down
    ints[:, -1, spec.int_col(0, "action_age")] = 59
    with torch.no_grad():
        outputs = model(float_ctx, ints, torch.zeros(1, spec.ctrl_conditioning_dim))
    assert outputs["p0_ground_logits"].argmax(1).item() == 0
    # Training keeps the held ground, even walking onto the next segment.
    model.train()
    walking = air_step(model, spec, 14, 14, [0.0], [0.0], [1.0], x=[5.5], grounded=True, ground=FLOOR)
    assert walking["ground"].tolist() == [FLOOR]

    with pytest.raises(ValueError, match="stage_surfaces"):
        build_model(encoding, ModelConfig(heads="full_state", ground_from_surfaces=True))


def test_hurtbox_from_invulnerable_follows_the_predicted_binary_and_starts_in_the_actions_state():
    encoding, spec, model = table_model(hurtbox_from_invulnerable=True)
    roll, intangible, invulnerable = 233, 2, 1
    states = torch.full_like(model.invulnerable_hurtbox, intangible)
    states[roll] = invulnerable
    model.calibrate_invulnerable_hurtbox(states)
    binary = model.layout.binary_cols.index(spec.float_col(0, "invulnerable"))
    # Last hurtbox, whether the binary's head says invulnerable, the predicted action.
    rows = [
        (0, True, roll),
        (0, True, 14),
        (intangible, True, roll),
        (invulnerable, False, roll),
        (0, False, 14),
    ]
    float_ctx = torch.zeros(len(rows), 10, spec.float_per_frame)
    ints = torch.zeros(len(rows), 10, spec.int_per_frame, dtype=torch.long)
    ints[:, -1, spec.int_col(0, "hurtbox")] = torch.tensor([last for last, _, _ in rows])
    with torch.no_grad():
        model.heads.weight.zero_()
        model.heads.bias.zero_()
        model.heads.bias[model._head_slice("p0_hurtbox_logits").start + intangible] = 40.0
        model.heads.bias[model._head_slice("binary_logits").start + binary] = -40.0
        outputs = model(float_ctx, ints, torch.zeros(len(rows), spec.ctrl_conditioning_dim))
    # In the forward pass the head wants intangible, the binary says vulnerable: vulnerable it is.
    assert (outputs["p0_hurtbox_logits_raw"].argmax(1) == intangible).all()
    assert (outputs["p0_hurtbox_logits"].argmax(1) == 0).all()
    outputs["binary_logits"][:, binary] = torch.tensor([10.0 if sure else -10.0 for _, sure, _ in rows])
    outputs["p0_action_logits"] = torch.nn.functional.one_hot(
        torch.tensor([action for _, _, action in rows]), spec.vocab("action")
    ).float()
    decided = model.hurtbox_logits(outputs, ints[:, -1], 0).argmax(1)
    assert decided.tolist() == [invulnerable, intangible, intangible, 0, 0]

    with pytest.raises(ValueError, match="hurtbox head"):
        build_model(encoding, ModelConfig(hurtbox_from_invulnerable=True))


def test_hit_tables_land_a_hit_in_a_known_cell_only_with_the_defender_in_front():
    from meleewm_core.models.mlp import HIT_DISTANCE_BIN, hit_cell

    encoding, spec, model = table_model(hit_tables=True, hit_table_size=8)
    assert len(model.hit_cells) == 8  # the saved table's size is the config's
    character, forward_smash, age, move, damage = 2, 60, 12, 7, 13.0
    float_ctx = torch.zeros(3, 10, spec.float_per_frame)
    ints = torch.zeros(3, 10, spec.int_per_frame, dtype=torch.long)
    for name, value in (("character", character), ("action", forward_smash), ("action_age", age)):
        ints[:, :, spec.int_col(0, name)] = value
    last = float_ctx[:, -1]
    last[:, spec.float_col(0, "facing")] = torch.tensor([1.0, 0.0, 1.0])  # the second faces away
    last[:, spec.float_col(1, "x")] = 2 * HIT_DISTANCE_BIN * spec.scale("x")
    last[2, spec.float_col(1, "y")] = 3 * HIT_DISTANCE_BIN * spec.scale("y")  # the third: far above
    last[:, spec.float_col(1, "percent")] = 0.2
    cell = hit_cell(last, ints[:, -1], spec, 0)[:1]
    model.calibrate_hit_tables(cell, torch.tensor([move]), torch.tensor([damage]))
    ctrl = torch.zeros(3, spec.ctrl_conditioning_dim)
    with torch.no_grad():
        model.heads.weight.zero_()
        model.heads.bias.zero_()  # the heads: no change anywhere
        outputs = model(float_ctx, ints, ctrl)
    landed = outputs["p0_last_attack_landed_logits"].argmax(1)
    percent = model.layout.continuous_cols.index(spec.float_col(1, "percent"))
    raised = outputs["continuous_delta"][:, percent] / spec.scale("percent")
    assert landed[0] == move and (landed[1:] != move).all()
    assert torch.isclose(raised[0], torch.tensor(damage)) and (raised[1:].abs() < 0.5).all()
    assert "p0_last_attack_landed_logits_raw" in outputs
    # The defender (player 1) attacks nobody from there: its own cell is unknown.
    assert outputs["p1_last_attack_landed_logits"].argmax(1)[0] != move
    with torch.no_grad():
        training = model.train()(float_ctx, ints, ctrl)
    assert (training["continuous_delta"][:, percent] / spec.scale("percent")).abs().max() < 0.5

    with pytest.raises(ValueError, match="last attack head"):
        build_model(encoding, ModelConfig(hit_tables=True))


def test_action_tables_decide_the_next_action_of_a_known_cell_and_keep_one_that_stays():
    from meleewm_core.encoding import CONTROLLER_FIELDS
    from meleewm_core.models.mlp import transition_cell

    encoding, spec, model = table_model(action_tables=True, action_table_size=8)
    assert len(model.action_cells) == 8  # the saved table's size is the config's
    jump_squat, jump_f, jump_b, guessed = 24, 25, 26, 10
    controls = len(CONTROLLER_FIELDS)
    float_ctx = torch.zeros(4, 10, spec.float_per_frame)
    float_ctx[
        :, :, [spec.float_col(p, name) for p in (0, 1) for name in ("main_x", "main_y", "c_x", "c_y")]
    ] = 0.5
    float_ctx[:, :, spec.float_col(0, "facing")] = 1.0  # player 0 faces right, player 1 left
    ints = torch.zeros(4, 10, spec.int_per_frame, dtype=torch.long)
    for p in (0, 1):
        for name, value in (("character", 2), ("action", jump_squat), ("action_age", 4), ("state_age", 4)):
            ints[:, :, spec.int_col(p, name)] = value
    ints[3, :, spec.int_col(0, "character")] = 3  # another character, pushing forward like row 0
    ctrl = torch.zeros(4, spec.ctrl_conditioning_dim)
    for p in (0, 1):
        ctrl[:, p * controls : p * controls + 4] = 0.5
    main_x = CONTROLLER_FIELDS.index("main_x")
    ctrl[:, main_x] = torch.tensor([0.95, 0.05, 0.5, 0.95])  # forward, back, neutral, forward
    ctrl[0, controls + main_x] = 0.05  # player 1 pushes forward too: to its left
    last, now = float_ctx[:, -1], ctrl[:, :controls]
    last_ctrl = last[:, [spec.float_col(0, name) for name in CONTROLLER_FIELDS]]
    own, shared = transition_cell(last, ints[:, -1], last_ctrl, now, spec, 0)
    first_state_age = torch.zeros_like(model.action_first_state_age)
    first_state_age[jump_f] = 1
    model.calibrate_action_tables(
        torch.stack([own[0], shared[1], own[2]]), torch.tensor([jump_f, jump_b, jump_squat]), first_state_age
    )
    hitlag = model.layout.continuous_cols.index(spec.float_col(0, "hitlag"))

    def predict(hit: bool) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            model.heads.weight.zero_()
            model.heads.bias.zero_()
            for p in (0, 1):  # the heads say action 10
                model.heads.bias[model._head_slice(f"p{p}_action_logits").start + guessed] = 5.0
            if hit:  # ... and player 0's hitlag starting
                model.heads.bias[model._head_slice("continuous_delta").start + hitlag] = 1.0
            return model(float_ctx, ints, ctrl)

    outputs = predict(hit=False)
    chosen = {
        key: outputs[f"p0_{key}_logits"].argmax(1).tolist() for key in ("action", "action_age", "state_age")
    }
    # Row 0: the character's own cell (a new action: action_age 0, state_age its usual first);
    # row 1: every character's; row 2: the cell keeps the jump squat a frame older; row 3: another
    # character's cell, unknown: the heads'.
    assert chosen["action"] == [jump_f, jump_b, jump_squat, guessed]
    assert chosen["action_age"][:3] == [0, 0, 5] and chosen["state_age"][:3] == [1, 0, 5]
    # Player 1, facing left, reads its own controller: forward in row 0, neutral (kept) after.
    assert outputs["p1_action_logits"].argmax(1).tolist() == [jump_f, *[jump_squat] * 3]
    assert "p0_action_logits_raw" in outputs
    # A cell that keeps the action does not overrule heads that see a hit coming; one that starts
    # an action still decides.
    assert predict(hit=True)["p0_action_logits"].argmax(1).tolist() == [jump_f, jump_b, guessed, guessed]
    with torch.no_grad():
        training = model.train()(float_ctx, ints, ctrl)
    assert (training["p0_action_logits"].argmax(1) == guessed).all()

    with pytest.raises(ValueError, match="action_age_as_embed"):
        build_model(EncodingConfig(), ModelConfig(heads="full_state", action_tables=True))


def test_categorical_gate_keeps_a_sticky_field_that_a_confident_trunk_would_change():
    encoding = EncodingConfig()
    spec = EncodingSpec(encoding)
    config = ModelConfig(heads="full_state", persistence_prior=True, delta_gate=True)
    models = {
        gate: build_model(encoding, config.model_copy(update={"categorical_gate": gate})).eval()
        for gate in (False, True)
    }
    shared = models[True].state_dict()
    rows = models[False].heads.bias.shape[0]
    shared["heads.weight"], shared["heads.bias"] = shared["heads.weight"][:rows], shared["heads.bias"][:rows]
    del shared["gated_categoricals"]
    models[False].load_state_dict(shared)
    heads = models[True].layout.logit_heads
    rates = torch.tensor([1.0 if name == "character" else 0.9 for _, _, name, _ in heads])
    binary_rates = torch.full((len(models[True].layout.binary_cols),), 0.995)
    float_ctx = torch.rand(3, 10, spec.float_per_frame)
    int_ctx = torch.randint(0, 3, (3, 10, spec.int_per_frame))
    int_ctx[:, -1, spec.int_col(0, "character")] = 2
    ctrl = torch.rand(3, spec.ctrl_conditioning_dim)
    predicted = {}
    for gate, model in models.items():
        model.calibrate_persistence(binary_rates, rates)
        with torch.no_grad():
            # A trunk sure that player 0 is character 5 (what training on a few games teaches).
            offset = model._head_slice("p0_character_logits").start
            model.heads.bias[offset + 5] = 40.0
        outputs = model(float_ctx, int_ctx, ctrl)
        predicted[gate] = outputs["p0_character_logits"].argmax(1)
        if gate:
            torch.testing.assert_close(
                outputs["p0_character_logits"].logsumexp(1), torch.zeros(3), atol=1e-5, rtol=0
            )
            assert models[True].gated_categoricals.tolist() == [
                name == "character" for _, _, name, _ in heads
            ]
            # Fields the calibration left ungated (action changes on 10% of frames) keep plain logits.
            plain = models[False](float_ctx, int_ctx, ctrl)["p0_action_logits"]
            torch.testing.assert_close(outputs["p0_action_logits"].float(), plain.float())
    assert predicted[False].tolist() == [5, 5, 5] and predicted[True].tolist() == [2, 2, 2]

    with pytest.raises(ValueError, match="categorical_gate needs model.persistence_prior"):
        build_model(encoding, ModelConfig(heads="full_state", categorical_gate=True))


def test_stage_surfaces_place_a_grounded_player_on_the_line_and_feed_the_height_above_it():
    encoding = EncodingConfig()
    spec = EncodingSpec(encoding)
    config = ModelConfig(heads="full_state", persistence_prior=True, delta_gate=True, stage_surfaces=True)
    model = build_model(encoding, config).eval()
    plain = build_model(encoding, config.model_copy(update={"stage_surfaces": False}))
    # Two features per player: the height above the surface beneath and "no surface beneath".
    assert count_parameters(model) - count_parameters(plain) == 4 * config.hidden_dim

    stage, ground = 3, 2
    line, extent = (
        torch.zeros(spec.vocab("stage"), spec.vocab("ground"), 2),
        torch.zeros(spec.vocab("stage"), spec.vocab("ground"), 2),
    )
    known = torch.zeros(spec.vocab("stage"), spec.vocab("ground"), dtype=torch.bool)
    line[stage, ground] = torch.tensor([1.0, 0.1])  # encoded units: y = 1 + 0.1 x
    extent[stage, ground] = torch.tensor([-2.0, 2.0])
    known[stage, ground] = True
    model.calibrate_surfaces(line, extent, known)

    x, y = spec.float_col(0, "x"), spec.float_col(0, "y")
    # Player 0 (x, y, on the ground last frame), the surface at 1.05 under x = 0.5: landing from 2
    # game units above; 18 units above; coming up from 2 units below; past the surface's end;
    # standing on it; grounded 2 units above it (held in a throw).
    rows = [
        (0.5, 1.15, 0.0),
        (0.5, 1.95, 0.0),
        (0.5, 0.95, 0.0),
        (5.0, 1.6, 0.0),
        (0.5, 1.05, 1.0),
        (0.5, 1.15, 1.0),
    ]
    float_ctx = torch.zeros(len(rows), 10, spec.float_per_frame)
    for i, (px, py, grounded) in enumerate(rows):
        float_ctx[i, :, x], float_ctx[i, :, y] = px, py
        float_ctx[i, :, spec.float_col(0, "on_ground")] = grounded
    int_ctx = torch.zeros(len(rows), 10, spec.int_per_frame, dtype=torch.long)
    int_ctx[:, :, spec.stage_col] = stage
    int_ctx[:, :, spec.int_col(0, "ground")] = ground
    ctrl = torch.rand(len(rows), spec.ctrl_conditioning_dim)

    heights = model.surface_heights(float_ctx[:, -1], int_ctx[:, -1, spec.stage_col])
    # 0.1 encoded = 2 game units = 0.2 tens of units; 0.9 encoded = 18 units.
    expected = [[0.2, 0.0], [1.8, 0.0], [10.0, 1.0], [10.0, 1.0], [0.0, 0.0], [0.2, 0.0]]
    torch.testing.assert_close(heights[:, :2], torch.tensor(expected))
    assert heights[:, 3].eq(1).all()  # player 1 stands nowhere known

    # Heads that move player 0 right by 0.2, say "on the ground", and hold every other field.
    layout = model.layout
    x_slot, y_slot = layout.continuous_cols.index(x), layout.continuous_cols.index(y)
    on_ground = layout.binary_cols.index(spec.float_col(0, "on_ground"))
    with torch.no_grad():
        model.heads.weight.zero_()
        model.heads.bias.zero_()
        model.heads.bias[x_slot] = 0.2
        gates = model._head_slice("continuous_change_logits")
        model.heads.bias[gates] = -5.0
        model.heads.bias[gates.start + x_slot] = 5.0
        model.heads.bias[model._head_slice("binary_logits").start + on_ground] = 10.0
    delta_y = model(float_ctx, int_ctx, ctrl)["continuous_delta"][:, y_slot]
    # Placed at 1 + 0.1 * 0.7 = 1.07: the landing and the standing player; the others keep their y.
    torch.testing.assert_close(delta_y, torch.tensor([1.07 - 1.15, 0.0, 0.0, 0.0, 1.07 - 1.05, 0.0]))

    reloaded = build_model(encoding, config).eval()
    reloaded.load_state_dict(model.state_dict())
    assert torch.equal(reloaded.surface_known, known) and torch.equal(reloaded.surface_line, line)

    with pytest.raises(ValueError, match="stage_surfaces needs heads: full_state"):
        build_model(encoding, ModelConfig(persistence_prior=True, delta_gate=True, stage_surfaces=True))


def test_transition_head_starts_as_the_model_without_it_and_reads_one_players_own_frame_and_controller():
    encoding = EncodingConfig(state_age_as_embed=True, press_events=True, action_age_as_embed=True)
    spec = EncodingSpec(encoding)
    config = ModelConfig(heads="full_state", persistence_prior=True, transition_head=True)
    model = build_model(encoding, config).eval()
    plain = build_model(encoding, config.model_copy(update={"transition_head": False})).eval()
    # Input: one player's floats, categorical embeddings, own controller and presses, 12 stick features.
    width = spec.float_per_player + model.player_embed_dim + spec.controller_dim + 8 + 12
    outputs = spec.vocab("action") + spec.vocab("jumps")
    assert count_parameters(model) - count_parameters(plain) == (width + 1) * 128 + (128 + 1) * outputs

    plain.load_state_dict(model.state_dict(), strict=False)
    float_ctx = torch.rand(6, 10, spec.float_per_frame)
    int_ctx = torch.randint(0, 3, (6, 10, spec.int_per_frame))
    ctrl = torch.rand(6, spec.ctrl_conditioning_dim)
    mine, theirs = model(float_ctx, int_ctx, ctrl), plain(float_ctx, int_ctx, ctrl)
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)

    # Trained (here: random last layer), player 0's terms follow player 0's controller only.
    with torch.no_grad():
        model.transition[-1].weight.normal_()
    p1_stick = [i for i, name in enumerate(spec.ctrl_names) if name == "p1.main_x"]
    moved = ctrl.clone()
    moved[:, p1_stick] = 1 - moved[:, p1_stick]
    before, after = model(float_ctx, int_ctx, ctrl), model(float_ctx, int_ctx, moved)
    trunk_only = (
        plain(float_ctx, int_ctx, moved)["p0_action_logits"]
        - plain(float_ctx, int_ctx, ctrl)["p0_action_logits"]
    )
    torch.testing.assert_close(after["p0_action_logits"] - before["p0_action_logits"], trunk_only)
    p1_change = after["p1_action_logits"] - before["p1_action_logits"]
    p1_trunk = (
        plain(float_ctx, int_ctx, moved)["p1_action_logits"]
        - plain(float_ctx, int_ctx, ctrl)["p1_action_logits"]
    )
    assert not torch.allclose(p1_change, p1_trunk)


def test_transition_binaries_start_at_zero_and_move_only_the_players_own_binaries():
    encoding = EncodingConfig(state_age_as_embed=True, press_events=True, action_age_as_embed=True)
    spec = EncodingSpec(encoding)
    head = ModelConfig(heads="full_state", persistence_prior=True, transition_head=True)
    model = build_model(encoding, head.model_copy(update={"transition_binaries": True})).eval()
    without = build_model(encoding, head).eval()
    assert count_parameters(model) - count_parameters(without) == (128 + 1) * 3
    float_ctx = torch.rand(6, 10, spec.float_per_frame)
    int_ctx = torch.randint(0, 3, (6, 10, spec.int_per_frame))
    ctrl = torch.rand(6, spec.ctrl_conditioning_dim)
    shared = {k: v for k, v in model.state_dict().items() if not k.startswith("transition.2.")}
    without.load_state_dict(shared, strict=False)
    with torch.no_grad():  # the same trained action/jumps part in both, zero binary rows in ``model``
        model.transition[-1].weight[:-3].normal_()
        without.transition[-1].weight.copy_(model.transition[-1].weight[:-3])
    torch.testing.assert_close(
        model(float_ctx, int_ctx, ctrl)["binary_logits"], without(float_ctx, int_ctx, ctrl)["binary_logits"]
    )

    # Trained (random binary rows): player 1's stick moves player 0's binaries only through the
    # trunk, player 1's through the head too.
    with torch.no_grad():
        model.transition[-1].weight[-3:].normal_()
    p1_stick = [i for i, name in enumerate(spec.ctrl_names) if name == "p1.main_x"]
    moved = ctrl.clone()
    moved[:, p1_stick] = 1 - moved[:, p1_stick]
    change = (
        model(float_ctx, int_ctx, moved)["binary_logits"] - model(float_ctx, int_ctx, ctrl)["binary_logits"]
    )
    trunk = (
        without(float_ctx, int_ctx, moved)["binary_logits"]
        - without(float_ctx, int_ctx, ctrl)["binary_logits"]
    )
    torch.testing.assert_close(change[:, :3], trunk[:, :3])
    assert not torch.allclose(change[:, 3:], trunk[:, 3:])

    with pytest.raises(ValueError, match="transition_binaries needs model.transition_head"):
        build_model(encoding, ModelConfig(heads="full_state", transition_binaries=True))


def test_stick_features_give_deflection_and_push_toward_the_facing_direction():
    from meleewm_core.models.mlp import stick_features

    neutral = torch.full((2, 4), 0.5)
    smash_right = torch.tensor([[1.0, 0.5, 0.5, 0.5]] * 2)
    facing = torch.tensor([1.0, 0.0])  # right, left
    features = stick_features(neutral, smash_right, facing)
    assert features.shape == (2, 12)
    assert torch.equal(features[:, :6], torch.zeros(2, 6))  # the last frame: neutral
    assert torch.equal(features[:, 6:10], torch.tensor([[1.0, 0, 0, 0]] * 2))  # deflection of each axis
    # Main stick x toward the facing direction: a dash facing right, a turn facing left.
    assert torch.equal(features[:, 10], torch.tensor([1.0, -1.0]))


def test_next_frame_derives_action_age_from_the_predicted_action():
    encoding = EncodingConfig(action_age_as_embed=True)
    spec = EncodingSpec(encoding)
    model = build_model(encoding, ModelConfig(heads="full_state")).eval()
    cap = spec.vocab("action_age") - 1
    int_ctx = torch.zeros(3, 10, spec.int_per_frame, dtype=torch.long)
    action, age = spec.int_col(0, "action"), spec.int_col(0, "action_age")
    int_ctx[:, -1, action] = 14
    int_ctx[:, -1, age] = torch.tensor([5, cap, 7])
    float_ctx, ctrl = torch.rand(3, 10, spec.float_per_frame), torch.rand(3, spec.ctrl_conditioning_dim)
    outputs = model(float_ctx, int_ctx, ctrl)
    logits = torch.zeros_like(outputs["p0_action_logits"])
    logits[:, 14] = 1.0
    logits[2, 20] = 2.0  # the third player starts a dash
    outputs["p0_action_logits"] = logits
    # The age head says 0 everywhere: the frame ignores it.
    outputs["p0_action_age_logits"] = torch.zeros_like(outputs["p0_action_age_logits"]).index_fill(
        1, torch.tensor([0]), 9.0
    )
    floats, ints = next_frame(outputs, float_ctx[:, -1], int_ctx[:, -1], ctrl, model.layout)
    assert ints[:, action].tolist() == [14, 14, 20]
    assert ints[:, age].tolist() == [6, cap, 0]

    # The metrics score the frame's ages, not the head's: against that frame every age is right.
    metrics = MetricAccumulator(model.layout)
    metrics.update(outputs, Batch(float_ctx, int_ctx, ctrl, floats, ints), torch.zeros(()), {})
    assert metrics.result()["field/action_age_acc"] == 1.0
