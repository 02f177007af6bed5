"""FrameStackMLP v2.2: K encoded frames + the next frame's controllers -> the next frame's state.

Per context frame: the float row, then each categorical's learned embedding (player 0's fields,
player 1's, then stage; one table per field, shared by both players); K such frames are flattened
and the conditioning appended (1,846 inputs at the defaults). Trunk Linear(in, 512)-ReLU-Dropout-
Linear(512, 256)-ReLU-Dropout. All heads are one Linear whose output is split by name (the same
parameters as one Linear per head, fewer kernel launches). 1,304,182 parameters at the defaults.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from meleewm_core.config import EncodingConfig, ModelConfig
from meleewm_core.encoding import (
    BINARY_FIELDS,
    BLAST_SIDES,
    CONTROLLER_FIELDS,
    DEATH_ACTIONS,
    DEATH_OR_RESPAWN_ACTIONS,
    ENTRY_ACTION,
    ENTRY_END_ACTION,
    ENTRY_START_ACTION,
    FREE_FALL_ACTIONS,
    JUMP_ACTIONS,
    KNOCKBACK_DECAY,
    NUM_PLAYERS,
    REBIRTH_ACTION,
    STICK_FIELDS,
    EncodingSpec,
    head_layout,
)
from meleewm_core.models import layers

# ``normalized_dynamics``: a column that barely varies in training divides by at least this, and
# no standardised input or normalised change leaves +-INPUT_CLIP.
STD_FLOOR = 1e-2
INPUT_CLIP = 20.0
# ``stage_surfaces``: heights above the surface beneath are fed in tens of game units, capped at
# 100 units (higher is all "far above"); a player within SURFACE_TOLERANCE game units above a
# line stands on it. A player is placed on a surface only if the y head's guess is within
# SNAP_DISTANCE game units of it (about a frame of fast fall), so a wrong on_ground call in the air
# costs at most that.
SNAP_DISTANCE = 5.0
HEIGHT_UNIT = 10.0
HEIGHT_CAP = 10.0
SURFACE_TOLERANCE = 0.1
# ``transition_head``: width of its hidden layer, and the categorical heads it adds to (with
# ``transition_binaries`` the player's binary logits too).
TRANSITION_HIDDEN = 128
TRANSITION_HEADS = ("action", "jumps")
# Per stick axis its deflection, and per x axis the push toward the way the player faces, for the
# last and the predicted frame's controller: 2 * (4 + 2).
STICK_FEATURES = 12
# ``binary_flip_tables``: predicted state_ages at or past this share one row of the table.
TRANSITION_AGE_CAP = 64
# ``air_physics``: a vertical speed within RULE_TOLERANCE game units/frame of a character's fall or
# fast-fall speed is at it; the main stick pushed from above to below -FAST_FALL_STICK starts a
# fast fall.
RULE_TOLERANCE = 1e-3
FAST_FALL_STICK = 0.66
# ``air_drift``: Melee's stick deadzone (23/80): inside it air friction slows a drifting player.
STICK_DEADZONE = 0.2875
# ``hit_tables``: cells of this many game units (defender relative to attacker), this many at
# most from the attacker on each axis.
HIT_DISTANCE_BIN = 8.0
HIT_DISTANCE_CELLS = 20
# ``action_tables``: each stick axis falls in one of five zones (at or past the smash threshold
# 0.8 either way, tilted either way, inside Melee's deadzone), decided on Melee's grid of 1/80
# steps (edges halfway between steps: the float32 encoding puts +0.8 a hair below it and -0.8 a
# hair past it); the shoulder pressed past SHIELD_PRESS shields as L or R does; a button is
# released, pressed (this frame) or held.
STICK_STEPS = 80
STICK_ZONE_EDGES = (-63.5, -22.5, 22.5, 63.5)
SHIELD_PRESS = 0.3
TABLE_BUTTONS = (("A",), ("B",), ("X", "Y"), ("L", "R"), ("Z",))
# The logit of a value decided outright (a flip table's binary, a held categorical): sure enough
# that a sigmoid or softmax reads it as certain, finite so the reported losses stay finite.
DECIDED_LOGIT = 10.0


class FrameStackMLP(nn.Module):
    def __init__(self, encoding: EncodingConfig, model: ModelConfig):
        super().__init__()
        self.spec = EncodingSpec(encoding)
        self.layout = head_layout(self.spec, model.heads)
        self.context_len = model.context_len
        spec = self.spec

        self.embeddings = nn.ModuleDict(
            {
                name: layers.Embedding(spec.vocab(name), spec.embed_dim(name))
                for name in (*spec.categorical_fields, "stage")
            }
        )
        # Both players' int columns of each categorical, gathered in one lookup.
        for name in spec.categorical_fields:
            cols = [spec.int_col(p, name) for p in range(NUM_PLAYERS)]
            self.register_buffer(f"cols_{name}", torch.tensor(cols), persistent=False)

        num_deltas = len(self.layout.continuous_cols)
        input_dim = spec.model_input_dim(model.context_len)
        # The float column of each predicted continuous delta.
        self.register_buffer("delta_cols", torch.tensor(self.layout.continuous_cols), persistent=False)
        self.normalized_dynamics = model.normalized_dynamics
        if model.normalized_dynamics:
            input_dim += (model.context_len - 1) * num_deltas
            # Identity until ``calibrate_dynamics`` measures the training data; saved with the weights.
            self.register_buffer("float_mean", torch.zeros(spec.float_per_frame))
            self.register_buffer("float_std", torch.ones(spec.float_per_frame))
            self.register_buffer("delta_scale", torch.ones(num_deltas))
        self.stage_surfaces = model.stage_surfaces
        if model.stage_surfaces:
            if "ground" not in self.layout.categoricals or not model.delta_gate:
                raise ValueError(
                    "model.stage_surfaces needs heads: full_state (its ground head) and model.delta_gate"
                )
            input_dim += 2 * NUM_PLAYERS
            # Per (stage, ground id): the line's (a, b), its x extent, whether it is a known surface.
            # Empty until ``calibrate_surfaces`` measures the training data; saved with the weights.
            surfaces = (spec.vocab("stage"), spec.vocab("ground"))
            self.register_buffer("surface_line", torch.zeros(*surfaces, 2))
            self.register_buffer("surface_extent", torch.zeros(*surfaces, 2))
            self.register_buffer("surface_known", torch.zeros(*surfaces, dtype=torch.bool))
            players = range(NUM_PLAYERS)
            # Per player: float columns of x, y and on_ground, the x and y delta outputs and the
            # on_ground logit. The ground id is the *last* surface touched (it stays while
            # airborne): a player is on it only where on_ground says so too.
            columns = {
                "surface_x_cols": [spec.float_col(p, "x") for p in players],
                "surface_y_cols": [spec.float_col(p, "y") for p in players],
                "surface_on_ground_cols": [spec.float_col(p, "on_ground") for p in players],
                "surface_speed_cols": [spec.float_col(p, "self_y") for p in players],
                "surface_x_slots": [
                    self.layout.continuous_cols.index(spec.float_col(p, "x")) for p in players
                ],
                "surface_y_slots": [
                    self.layout.continuous_cols.index(spec.float_col(p, "y")) for p in players
                ],
                "surface_on_ground_logits": [
                    self.layout.binary_cols.index(spec.float_col(p, "on_ground")) for p in players
                ],
            }
            for name, indices in columns.items():
                self.register_buffer(name, torch.tensor(indices), persistent=False)
            self.ground_heads = [f"p{p}_ground_logits" for p in players]
        self.trunk = nn.Sequential(
            nn.Linear(input_dim, model.hidden_dim),
            nn.ReLU(),
            layers.Dropout(model.dropout),
            nn.Linear(model.hidden_dim, model.trunk_dim),
            nn.ReLU(),
            layers.Dropout(model.dropout),
        )
        self.head_sizes = {
            "continuous_delta": num_deltas,
            "binary_logits": len(self.layout.binary_cols),
            **{key: vocab for key, _, _, vocab in self.layout.logit_heads},
        }
        self.delta_gate = model.delta_gate
        if model.delta_gate:
            self.head_sizes["continuous_change_logits"] = num_deltas
        self.categorical_gate = model.categorical_gate
        if model.categorical_gate:
            if not model.persistence_prior:
                raise ValueError(
                    "model.categorical_gate needs model.persistence_prior (its calibration picks the gated fields)"
                )
            self.head_sizes["categorical_change_logits"] = len(self.layout.logit_heads)
            # Which heads are mixtures: set by ``calibrate_persistence``, saved with the weights, and
            # mirrored as host-side indices so forward neither syncs nor mixes the other heads.
            self.register_buffer(
                "gated_categoricals", torch.zeros(len(self.layout.logit_heads), dtype=torch.bool)
            )
            self.mixture_heads: frozenset[int] = frozenset()
            self.register_load_state_dict_post_hook(lambda module, _keys: module._mirror_gated_categoricals())
        self.heads = nn.Linear(model.trunk_dim, sum(self.head_sizes.values()))

        self.transition_head = model.transition_head
        if model.transition_binaries and not model.transition_head:
            raise ValueError(
                "model.transition_binaries needs model.transition_head (it adds to that head's outputs)"
            )
        if model.transition_head:
            own_ctrl = [
                [i for i, name in enumerate(spec.ctrl_names) if name.startswith(f"p{p}.")]
                for p in range(NUM_PLAYERS)
            ]
            self.register_buffer("transition_ctrl_cols", torch.tensor(own_ctrl), persistent=False)
            self.player_embed_dim = sum(spec.embed_dim(name) for name in spec.categorical_fields)
            stick_cols = [[spec.float_col(p, name) for name in STICK_FIELDS] for p in range(NUM_PLAYERS)]
            facing_cols = [spec.float_col(p, "facing") for p in range(NUM_PLAYERS)]
            self.register_buffer("transition_stick_cols", torch.tensor(stick_cols), persistent=False)
            self.register_buffer("transition_facing_cols", torch.tensor(facing_cols), persistent=False)
            width = (
                spec.float_per_player
                + self.player_embed_dim
                + len(own_ctrl[0])
                + STICK_FEATURES
                + (2 if model.stage_surfaces else 0)
            )
            self.transition_sizes = [spec.vocab(name) for name in TRANSITION_HEADS]
            self.transition_binaries = model.transition_binaries
            if model.transition_binaries:
                self.transition_sizes.append(len(BINARY_FIELDS))
            self.transition = nn.Sequential(
                nn.Linear(width, TRANSITION_HIDDEN),
                nn.ReLU(),
                nn.Linear(TRANSITION_HIDDEN, sum(self.transition_sizes)),
            )
            # Zero at the start: the untrained model is the model without it.
            nn.init.zeros_(self.transition[-1].weight)
            nn.init.zeros_(self.transition[-1].bias)

        self.binary_flip_tables = model.binary_flip_tables
        if model.binary_flip_tables:
            if model.transition_binaries:
                raise ValueError(
                    "model.binary_flip_tables decides the binaries that model.transition_binaries adds to: choose one"
                )
            if model.heads != "full_state" or not encoding.state_age_as_embed:
                raise ValueError(
                    "model.binary_flip_tables needs heads: full_state and encoding.state_age_as_embed "
                    "(the predicted state_age)"
                )
            actions, binaries = spec.vocab("action"), len(BINARY_FIELDS)
            ages = min(spec.vocab("state_age"), TRANSITION_AGE_CAP)
            # Empty (never flip: persistence) until ``calibrate_flip_tables``; saved with the weights.
            self.register_buffer("flips_on_change", torch.zeros(actions, actions, binaries, dtype=torch.bool))
            self.register_buffer(
                "flips_on_stay",
                torch.zeros(spec.vocab("character"), actions, ages, binaries, dtype=torch.bool),
            )
            per_player = [[spec.float_col(p, name) for name in BINARY_FIELDS] for p in range(NUM_PLAYERS)]
            self.register_buffer("own_binary_cols", torch.tensor(per_player), persistent=False)

        unknown = set(model.held_categoricals) - set(self.layout.categoricals)
        if unknown:
            raise ValueError(
                f"model.held_categoricals: {sorted(unknown)} not among the heads' categoricals "
                f"{list(self.layout.categoricals)}"
            )
        self.held_heads = [
            (key, player, name)
            for key, player, name, _ in self.layout.logit_heads
            if name in model.held_categoricals
        ]

        self.hurtbox_from_invulnerable = model.hurtbox_from_invulnerable
        if model.hurtbox_from_invulnerable:
            if "hurtbox" not in self.layout.categoricals:
                raise ValueError("model.hurtbox_from_invulnerable needs heads: full_state (the hurtbox head)")
            # The last state (intangible, 2) on every action until ``calibrate_invulnerable_hurtbox``;
            # saved with the weights.
            self.register_buffer(
                "invulnerable_hurtbox", torch.full((spec.vocab("action"),), spec.vocab("hurtbox") - 1)
            )
            self.invulnerable_logits = [
                self.layout.binary_cols.index(spec.float_col(p, "invulnerable")) for p in range(NUM_PLAYERS)
            ]

        self.hit_tables = model.hit_tables
        if model.hit_tables:
            if "last_attack_landed" not in self.layout.categoricals or not encoding.action_age_as_embed:
                raise ValueError(
                    "model.hit_tables needs heads: full_state (the last attack head) and "
                    "encoding.action_age_as_embed (the move's frame)"
                )
            # Empty (no cell: no hit) until ``calibrate_hit_tables``; saved with the weights.
            size = model.hit_table_size
            self.register_buffer("hit_cells", torch.full((size,), torch.iinfo(torch.int64).max))
            self.register_buffer("hit_move", torch.zeros(size, dtype=torch.long))
            self.register_buffer("hit_damage", torch.zeros(size))
            self.hit_percent_slots = self.player_slots("percent")

        self.action_tables = model.action_tables
        if model.action_tables:
            if model.heads != "full_state" or not encoding.action_age_as_embed:
                raise ValueError(
                    "model.action_tables needs heads: full_state (the age heads) and "
                    "encoding.action_age_as_embed (the frame within the action)"
                )
            # Empty (no cell: the heads decide) until ``calibrate_action_tables``; saved with the weights.
            largest = (spec.vocab("character") + 1) * spec.vocab("action") * spec.vocab("action_age")
            largest *= (len(STICK_ZONE_EDGES) + 1) ** 6 * 3 ** len(TABLE_BUTTONS)
            if largest >= torch.iinfo(torch.int64).max:
                raise ValueError(
                    "model.action_tables: these vocabularies overflow the int64 transition cells"
                )
            size = model.action_table_size
            self.register_buffer("action_cells", torch.full((size,), torch.iinfo(torch.int64).max))
            self.register_buffer("action_next", torch.zeros(size, dtype=torch.long))
            # The state_age each action most often starts at (0 until measured); saved with the weights.
            self.register_buffer(
                "action_first_state_age", torch.zeros(spec.vocab("action"), dtype=torch.long)
            )
            self.hitlag_slots = self.player_slots("hitlag")

        self.respawn_sequence = model.respawn_sequence
        if model.respawn_sequence:
            if not encoding.action_age_as_embed:
                raise ValueError(
                    "model.respawn_sequence needs encoding.action_age_as_embed (the death timer)"
                )
            # Empty (no timer fires, nothing is set) until ``calibrate_respawn``; saved with the weights.
            sequence, slots = len(DEATH_OR_RESPAWN_ACTIONS), len(self.layout.continuous_cols)
            self.register_buffer("timed_next_action", torch.full((sequence, spec.vocab("action_age")), -1))
            self.register_buffer("respawn_values", torch.zeros(spec.vocab("stage"), slots))
            self.register_buffer("respawn_known", torch.zeros(spec.vocab("stage"), slots, dtype=torch.bool))
            owner = [col // spec.float_per_player for col in self.layout.continuous_cols]
            self.register_buffer("respawn_slot_player", torch.tensor(owner), persistent=False)

        self.blast_zones = model.blast_zones
        if model.blast_zones:
            if model.heads != "full_state":
                raise ValueError("model.blast_zones needs heads: full_state (the stocks head)")
            # Empty (nobody dies) until ``calibrate_blast_zones``; saved with the weights.
            sides = (spec.vocab("stage"), len(BLAST_SIDES))
            self.register_buffer("blast_bounds", torch.zeros(sides))
            self.register_buffer("blast_known", torch.zeros(sides, dtype=torch.bool))
            self.register_buffer("blast_action", torch.full((len(BLAST_SIDES),), -1))
            self.register_buffer("blast_stock", torch.zeros(len(BLAST_SIDES), dtype=torch.bool))
            slots = self.layout.continuous_cols
            self.blast_slots = [
                {name: slots.index(spec.float_col(p, name)) for name in ("x", "y", "stocks")}
                for p in range(NUM_PLAYERS)
            ]
        self.air_physics = model.air_physics
        if model.air_physics:
            if model.heads != "full_state" or not model.stage_surfaces:
                raise ValueError(
                    "model.air_physics needs heads: full_state (the vertical speed and knockback heads) "
                    "and model.stage_surfaces (the floor)"
                )
            characters, jumps = spec.vocab("character"), len(JUMP_ACTIONS)
            # Empty (no character known: the heads decide) until ``calibrate_air_physics``; saved
            # with the weights.
            self.register_buffer("fall_speeds", torch.zeros(characters, 2))
            self.register_buffer("fall_known", torch.zeros(characters, dtype=torch.bool))
            self.register_buffer("take_offs", torch.zeros(characters, jumps, 2))
            self.register_buffer("take_off_known", torch.zeros(characters, jumps, 2, dtype=torch.bool))
            free_fall = torch.zeros(spec.vocab("action"), dtype=torch.bool)
            free_fall[[a for a in FREE_FALL_ACTIONS if a < len(free_fall)]] = True
            self.register_buffer("free_fall", free_fall, persistent=False)
            slots = self.layout.continuous_cols
            self.air_slots = [
                {
                    name: slots.index(spec.float_col(p, name))
                    for name in ("y", "self_x_air", "self_y", "knockback_x", "knockback_y", "hitlag")
                }
                for p in range(NUM_PLAYERS)
            ]
        self.air_drift = model.air_drift
        if model.air_drift:
            if not model.air_physics:
                raise ValueError("model.air_drift needs model.air_physics (the airborne players it moves)")
            # No character known (the heads decide) until ``calibrate_air_drift``; saved with the weights.
            self.register_buffer("drift", torch.zeros(spec.vocab("character"), len(DRIFT_CONSTANTS)))
            self.register_buffer("drift_known", torch.zeros(spec.vocab("character"), dtype=torch.bool))
        self.ground_friction = model.ground_friction
        if model.ground_friction:
            if model.heads != "full_state":
                raise ValueError("model.ground_friction needs heads: full_state (the ground speed head)")
            # No (character, action) slides (the heads decide) until ``calibrate_ground_friction``;
            # saved with the weights.
            self.register_buffer("friction", torch.zeros(spec.vocab("character")))
            self.register_buffer(
                "sliding", torch.zeros(spec.vocab("character"), spec.vocab("action"), dtype=torch.bool)
            )
            self.friction_slots = [
                dict(zip(("self_x_ground", "hitlag"), slots, strict=True))
                for slots in zip(self.player_slots("self_x_ground"), self.player_slots("hitlag"), strict=True)
            ]
            self.friction_on_ground_logits = self.player_slots("on_ground", self.layout.binary_cols)
        self.ground_from_surfaces = model.ground_from_surfaces
        if model.ground_from_surfaces:
            if not model.stage_surfaces:
                raise ValueError(
                    "model.ground_from_surfaces needs model.stage_surfaces (the surfaces and the ground head)"
                )
            # Where players stood on each surface (no x until ``calibrate_ground_spans``); saved
            # with the weights.
            self.register_buffer("ground_span", torch.zeros(spec.vocab("stage"), spec.vocab("ground"), 2))
        self.ecb_landing = model.ecb_landing
        if model.entry_platform and model.context_len < 2:
            raise ValueError("model.entry_platform needs model.context_len >= 2 (the platform's speed)")
        # Measures nothing, so a trained model can switch it on as it is (bench/entry_platform.py).
        self.entry_platform = model.entry_platform
        self.entry_slots = list(zip(self.player_slots("x"), self.player_slots("y"), strict=True))
        self.rules_in_training = model.rules_in_training
        if model.ecb_landing:
            if not model.stage_surfaces:
                raise ValueError("model.ecb_landing needs model.stage_surfaces (the surfaces to land on)")
            # Zero depth and no passable surface (a landing where the position crosses the line)
            # until ``calibrate_ecb_landing``; saved with the weights.
            self.register_buffer("landing_depth", torch.zeros(spec.vocab("character"), spec.vocab("action")))
            self.register_buffer(
                "surface_passable", torch.zeros(spec.vocab("stage"), spec.vocab("ground"), dtype=torch.bool)
            )
            self.register_buffer("landing_action", torch.full((spec.vocab("action"),), -1))
        # The ages of an action decided outright (a timer, a death) restart at 0.
        self.age_heads = [
            key for key, _, name, _ in self.layout.logit_heads if name in ("state_age", "action_age")
        ]

        self.motion_prior = model.motion_prior
        self.motion_gate = model.motion_gate
        if model.motion_prior:
            if model.context_len < 2:
                raise ValueError(
                    "model.motion_prior needs model.context_len >= 2 (a displacement needs two frames)"
                )
            if model.motion_gate and not model.delta_gate:
                raise ValueError(
                    "model.motion_gate needs model.delta_gate (the gate it lets close on x and y)"
                )
            slots = self.layout.position_slots
            self.register_buffer("motion_slots", torch.tensor(slots), persistent=False)
            self.register_buffer(
                "motion_cols", torch.tensor([self.layout.continuous_cols[i] for i in slots]), persistent=False
            )

        self.persistence_prior = model.persistence_prior
        if model.persistence_prior:
            with torch.no_grad():
                self.heads.weight[:num_deltas].zero_()
                self.heads.bias[:num_deltas].zero_()
            # One learned weight per binary and per categorical head for the last frame's value;
            # ``calibrate_persistence`` sets them from the data before training.
            self.binary_prior = nn.Parameter(torch.full((len(self.layout.binary_cols),), 2.0))
            self.categorical_prior = nn.Parameter(torch.full((len(self.layout.logit_heads),), 2.0))
            self.register_buffer("binary_cols", torch.tensor(self.layout.binary_cols), persistent=False)

    @torch.no_grad()
    def calibrate_persistence(
        self, binary_rates: torch.Tensor, categorical_rates: torch.Tensor, min_rate: float = 0.99
    ) -> None:
        """Start each prior at the log-odds of "the value repeats" measured on the training data,
        so the untrained model is calibrated persistence for that field.

        Only fields that repeat on at least ``min_rate`` of frames get a prior (binaries, character,
        ground, l_cancel, hurtbox, last attack): a field that changes more often (action: 7% of
        frames) learns its changes from the trunk much faster without one (3 epochs: action-change
        accuracy 0.05 with the prior, 0.33 without).
        """
        p = binary_rates.clamp(0.5, 0.9999)
        self.binary_prior.copy_(torch.where(binary_rates >= min_rate, torch.log(p / (1 - p)), 0.0))
        vocabs = torch.tensor(
            [vocab for _, _, _, vocab in self.layout.logit_heads],
            dtype=torch.float32,
            device=categorical_rates.device,
        )
        q = torch.maximum(categorical_rates, 1 / vocabs).clamp(max=0.9999)
        prior = torch.log(q / (1 - q) * (vocabs - 1)).clamp(min=0.0)
        sticky = categorical_rates >= min_rate
        if self.categorical_gate:
            # The gate starts at the measured change rate and the mixture replaces the bonus.
            self.gated_categoricals.copy_(sticky)
            self._mirror_gated_categoricals()
            gates = self._head_slice("categorical_change_logits")
            self.heads.weight[gates].zero_()
            self.heads.bias[gates] = torch.log((1 - q) / q)
            prior = torch.zeros_like(prior)
        self.categorical_prior.copy_(torch.where(sticky, prior, 0.0))

    def _mirror_gated_categoricals(self) -> None:
        self.mixture_heads = frozenset(torch.nonzero(self.gated_categoricals).flatten().tolist())

    def player_slots(self, name: str, cols: list[int] | None = None) -> list[int]:
        """Per player, the position of its field ``name`` among ``cols`` (the continuous head
        outputs unless given, e.g. ``layout.binary_cols``)."""
        cols = self.layout.continuous_cols if cols is None else cols
        return [cols.index(self.spec.float_col(p, name)) for p in range(NUM_PLAYERS)]

    def _head_slice(self, key: str) -> slice:
        start = 0
        for name, size in self.head_sizes.items():
            if name == key:
                return slice(start, start + size)
            start += size
        raise KeyError(key)

    @torch.no_grad()
    def calibrate_dynamics(
        self, float_mean: torch.Tensor, float_std: torch.Tensor, delta_scale: torch.Tensor
    ) -> None:
        """Set the input standardisation and the delta units (``normalized_dynamics``) from the
        training data: per float column its mean and standard deviation, per predicted continuous
        field its typical frame-to-frame change."""
        self.float_mean.copy_(float_mean)
        self.float_std.copy_(float_std.clamp(min=STD_FLOOR))
        self.delta_scale.copy_(delta_scale)

    @torch.no_grad()
    def calibrate_surfaces(self, line: torch.Tensor, extent: torch.Tensor, known: torch.Tensor) -> None:
        """Set the stage surfaces (``stage_surfaces``), as measured by ``train.stage_surfaces``."""
        self.surface_line.copy_(line)
        self.surface_extent.copy_(extent)
        self.surface_known.copy_(known)

    @torch.no_grad()
    def calibrate_ground_spans(self, spans: torch.Tensor) -> None:
        """Set the x spans players stood on each surface (``ground_from_surfaces``), as measured by
        ``train.surface_spans``."""
        self.ground_span.copy_(spans)

    @torch.no_grad()
    def calibrate_flip_tables(self, on_change: torch.Tensor, on_stay: torch.Tensor) -> None:
        """Set the flip tables (``binary_flip_tables``), as measured by ``train.binary_flip_tables``."""
        self.flips_on_change.copy_(on_change)
        self.flips_on_stay.copy_(on_stay)

    @torch.no_grad()
    def calibrate_respawn(self, next_action: torch.Tensor, values: torch.Tensor, known: torch.Tensor) -> None:
        """Set the death timers and respawn values (``respawn_sequence``), as measured by
        ``train.respawn_tables``."""
        self.timed_next_action.copy_(next_action)
        self.respawn_values.copy_(values)
        self.respawn_known.copy_(known)

    @torch.no_grad()
    def calibrate_blast_zones(
        self, bounds: torch.Tensor, known: torch.Tensor, side_action: torch.Tensor, side_stock: torch.Tensor
    ) -> None:
        """Set the blast zones (``blast_zones``), as measured by ``train.blast_zones``."""
        self.blast_bounds.copy_(bounds)
        self.blast_known.copy_(known)
        self.blast_action.copy_(side_action)
        self.blast_stock.copy_(side_stock)

    @torch.no_grad()
    def calibrate_air_physics(
        self,
        fall_speeds: torch.Tensor,
        fall_known: torch.Tensor,
        take_offs: torch.Tensor,
        take_off_known: torch.Tensor,
    ) -> None:
        """Set each character's fall, fast-fall and take-off speeds (``air_physics``), as measured
        by ``train.air_physics``."""
        self.fall_speeds.copy_(fall_speeds)
        self.fall_known.copy_(fall_known)
        self.take_offs.copy_(take_offs)
        self.take_off_known.copy_(take_off_known)

    @torch.no_grad()
    def calibrate_air_drift(self, drift: torch.Tensor, known: torch.Tensor) -> None:
        """Set each character's air drift constants (``air_drift``), as measured by ``train.air_drift``."""
        self.drift.copy_(drift)
        self.drift_known.copy_(known)

    @torch.no_grad()
    def calibrate_ground_friction(self, friction: torch.Tensor, sliding: torch.Tensor) -> None:
        """Set each character's ground friction and the actions it slides in (``ground_friction``),
        as measured by ``train.ground_friction``."""
        self.friction.copy_(friction)
        self.sliding.copy_(sliding)

    def follow_ground_friction(
        self, outputs: dict[str, torch.Tensor], last_floats: torch.Tensor, last_ints: torch.Tensor
    ) -> None:
        """Each player predicted to stay grounded, outside hitlag, in an action its character slides
        in gets its ground speed slowed by the character's friction (``ground_friction``)."""
        spec, scale = self.spec, self.spec.scale("self_x_ground")
        delta = outputs["continuous_delta"].float()
        for p, slot in enumerate(self.friction_slots):
            character, action = (last_ints[:, spec.int_col(p, name)] for name in ("character", "action"))
            speed = last_floats[:, spec.float_col(p, "self_x_ground")].float() / scale
            hitlag = last_floats[:, spec.float_col(p, "hitlag")].float()
            sliding = (
                self.sliding[character, action]
                & (outputs[f"p{p}_action_logits"].argmax(1) == action)
                & (last_floats[:, spec.float_col(p, "on_ground")] > 0.5)
                & (outputs["binary_logits"][:, self.friction_on_ground_logits[p]] > 0)
                & (hitlag <= 0)
                & (hitlag + delta[:, slot["hitlag"]] <= 0)
            )
            slowed = speed.sign() * (speed.abs() - self.friction[character]).clamp_min(0)
            delta[:, slot["self_x_ground"]] = torch.where(
                sliding, (slowed - speed) * scale, delta[:, slot["self_x_ground"]]
            )
        outputs["continuous_delta"] = delta

    @torch.no_grad()
    def calibrate_ecb_landing(
        self, depth: torch.Tensor, known: torch.Tensor, passable: torch.Tensor, landing_action: torch.Tensor
    ) -> None:
        """Set each character's and action's landing depth, the passable surfaces and the action a
        landing starts (``ecb_landing``), as measured by ``train.ecb_landings``."""
        self.landing_depth.copy_(torch.where(known, depth, 0.0))
        self.surface_passable.copy_(passable)
        self.landing_action.copy_(landing_action)

    def ride_entry_platform(
        self,
        outputs: dict[str, torch.Tensor],
        last_floats: torch.Tensor,
        before_floats: torch.Tensor,
        last_ints: torch.Tensor,
    ) -> None:
        """Players predicted to stay on the entry platform keep x and move y at the platform's last
        speed, up after EntryStart, down after EntryEnd, not at all after Entry (``entry_platform``).
        Entry to EntryStart is left to the heads: no earlier frame shows the platform's speed."""
        delta = outputs["continuous_delta"].float()
        entry = torch.tensor([ENTRY_ACTION, ENTRY_START_ACTION, ENTRY_END_ACTION], device=last_ints.device)
        for p, (x_slot, y_slot) in enumerate(self.entry_slots):
            last = last_ints[:, self.spec.int_col(p, "action")]
            predicted = outputs[f"p{p}_action_logits"].argmax(1)
            riding = torch.isin(last, entry) & torch.isin(predicted, entry)
            riding &= (last != ENTRY_ACTION) | (predicted == ENTRY_ACTION)
            y_col = self.layout.continuous_cols[y_slot]
            speed = (last_floats[:, y_col] - before_floats[:, y_col]).float().abs()
            direction = (last == ENTRY_START_ACTION).float() - (last == ENTRY_END_ACTION).float()
            delta[:, x_slot] = delta[:, x_slot].masked_fill(riding, 0.0)
            delta[:, y_slot] = torch.where(riding, speed * direction, delta[:, y_slot])
        outputs["continuous_delta"] = delta

    @property
    def rules_apply(self) -> bool:
        """Whether the rules measured on the training games decide this forward pass: always in
        evaluation, in training with ``rules_in_training`` (the respawn sequence and the blast
        zones never in training)."""
        return not self.training or self.rules_in_training

    def landing_reach(self, last: torch.Tensor, last_ints: torch.Tensor) -> torch.Tensor:
        """(B, players) how far below a surface's line, in encoded y, each player's position may
        be while its ECB is still above it: 0 for a player going up (an ECB lands only coming
        down), without ``ecb_landing`` and where the rules do not apply (``rules_apply``)."""
        if not self.ecb_landing or not self.rules_apply:
            return torch.zeros(len(last_ints), NUM_PLAYERS, device=last_ints.device)
        spec = self.spec
        depth = [
            self.landing_depth[
                last_ints[:, spec.int_col(p, "character")],
                last_ints[:, spec.int_col(p, "action")].clamp(max=self.landing_depth.shape[1] - 1),
            ]
            for p in range(NUM_PLAYERS)
        ]
        rising = last.index_select(1, self.surface_speed_cols).float() > 0
        return torch.where(rising, 0.0, torch.stack(depth, 1) * spec.scale("y"))

    @torch.no_grad()
    def calibrate_invulnerable_hurtbox(self, states: torch.Tensor) -> None:
        """Set the hurtbox state each action starts an invulnerability with
        (``hurtbox_from_invulnerable``), as measured by ``train.invulnerable_hurtbox``."""
        self.invulnerable_hurtbox.copy_(states)

    def hurtbox_logits(
        self, outputs: dict[str, torch.Tensor], last_ints: torch.Tensor, player: int
    ) -> torch.Tensor:
        """The player's hurtbox decided by the predicted invulnerable binary: 0 when vulnerable,
        the last state while invulnerable, the predicted action's starting state on becoming so."""
        key = f"p{player}_hurtbox_logits"
        invulnerable = outputs["binary_logits"][:, self.invulnerable_logits[player]] > 0
        last = last_ints[:, self.spec.int_col(player, "hurtbox")]
        starting = self.invulnerable_hurtbox[outputs[f"p{player}_action_logits"].argmax(1)]
        state = torch.where(invulnerable, torch.where(last != 0, last, starting), 0)
        return decided_logits(state, outputs[key])

    @torch.no_grad()
    def calibrate_hit_tables(self, cells: torch.Tensor, move: torch.Tensor, damage: torch.Tensor) -> None:
        """Set the cells where hits land (``hit_tables``), as measured by ``train.hit_tables``; the
        rest of the table stays empty (a cell no frame has)."""
        self.hit_cells.fill_(torch.iinfo(torch.int64).max)
        self.hit_move.zero_()
        self.hit_damage.zero_()
        self.hit_cells[: len(cells)] = cells
        self.hit_move[: len(move)] = move
        self.hit_damage[: len(damage)] = damage

    @torch.no_grad()
    def calibrate_action_tables(
        self, cells: torch.Tensor, next_action: torch.Tensor, first_state_age: torch.Tensor
    ) -> None:
        """Set the cells whose next action is known and the state_age each action starts at
        (``action_tables``), as measured by ``train.action_tables``; the rest of the table stays
        empty (a cell no frame has)."""
        order = cells.argsort()
        self.action_cells.fill_(torch.iinfo(torch.int64).max)
        self.action_next.zero_()
        self.action_cells[: len(cells)] = cells[order]
        self.action_next[: len(next_action)] = next_action[order]
        self.action_first_state_age.copy_(first_state_age)

    def action_from_table(self, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) cells -> each cell's next action in the table and whether it is there."""
        found = torch.searchsorted(self.action_cells, cell).clamp(max=len(self.action_cells) - 1)
        return self.action_next[found], self.action_cells[found] == cell

    def follow_action_tables(
        self,
        outputs: dict[str, torch.Tensor],
        last_floats: torch.Tensor,
        last_ints: torch.Tensor,
        next_ctrl: torch.Tensor,
    ) -> None:
        """Where a player's transition cell is in the table (its character's, else every
        character's), its predicted action is the cell's: a new action starts at action_age 0 and
        the state_age the training games' starts of it most often have; a kept one the heads would
        have left ages a frame (its state_age not in hitlag, which holds it). A kept cell does not
        overrule heads that predict the player's hitlag starting (a hit, which the cell cannot see)."""
        spec, controls = self.spec, len(CONTROLLER_FIELDS)
        delta = outputs["continuous_delta"]
        for p in range(NUM_PLAYERS):
            last_ctrl = last_floats[:, [spec.float_col(p, name) for name in CONTROLLER_FIELDS]]
            now_ctrl = next_ctrl[:, p * controls : (p + 1) * controls]
            own, shared = transition_cell(last_floats, last_ints, last_ctrl, now_ctrl, spec, p)
            # The character's own cell first, then every character's.
            action, known = self.action_from_table(own)
            shared_action, shared_known = self.action_from_table(shared)
            action, known = torch.where(known, action, shared_action), known | shared_known
            last_action = last_ints[:, spec.int_col(p, "action")]
            starts = known & (action != last_action)
            self.decide_action(outputs, p, starts, action)
            key = f"p{p}_action_logits"
            hitlag = last_floats[:, spec.float_col(p, "hitlag")].float()
            hit = (hitlag <= 0) & (hitlag + delta[:, self.hitlag_slots[p]].float() > 0)
            keeps = known & (action == last_action) & (outputs[key].argmax(1) != last_action) & ~hit
            outputs[key] = torch.where(
                keeps[:, None], decided_logits(last_action, outputs[key]), outputs[key]
            )
            for head, _, name, _ in self.layout.logit_heads:
                if head in self.age_heads and head.startswith(f"p{p}_"):
                    older = last_ints[:, spec.int_col(p, name)] + (hitlag <= 0 if name == "state_age" else 1)
                    older = older.clamp(max=spec.vocab(name) - 1)
                    outputs[head] = torch.where(
                        keeps[:, None], decided_logits(older, outputs[head]), outputs[head]
                    )
                    if name == "state_age":
                        first = self.action_first_state_age[action.clamp(min=0)].clamp(
                            max=spec.vocab(name) - 1
                        )
                        outputs[head] = torch.where(
                            starts[:, None], decided_logits(first, outputs[head]), outputs[head]
                        )

    def land_hits(
        self, outputs: dict[str, torch.Tensor], last_floats: torch.Tensor, last_ints: torch.Tensor
    ) -> None:
        """Where an attacker's cell is a known hit, its last attack landed becomes the cell's move
        and the defender's percent rises by the cell's damage."""
        spec = self.spec
        delta = outputs["continuous_delta"].float()
        for p in range(NUM_PLAYERS):
            cell = hit_cell(last_floats.float(), last_ints, spec, p)
            found = torch.searchsorted(self.hit_cells, cell).clamp(max=len(self.hit_cells) - 1)
            hits = self.hit_cells[found] == cell
            key = f"p{p}_last_attack_landed_logits"
            outputs.setdefault(f"{key}_raw", outputs[key])
            moved = decided_logits(self.hit_move[found], outputs[key])
            outputs[key] = torch.where(hits[:, None], moved, outputs[key])
            slot = self.hit_percent_slots[1 - p]
            damage = self.hit_damage[found] * spec.scale("percent")
            delta[:, slot] = torch.where(hits, damage, delta[:, slot])
        outputs["continuous_delta"] = delta

    def decide_action(
        self, outputs: dict[str, torch.Tensor], player: int, where: torch.Tensor, action: torch.Tensor
    ) -> None:
        """Make ``action`` (B,) the player's predicted action where ``where`` (B,), at ages 0; the
        heads' own logits stay what the loss trains (``*_raw``)."""
        key = f"p{player}_action_logits"
        ages = [head for head in self.age_heads if head.startswith(f"p{player}_")]
        for head in (key, *ages):
            outputs.setdefault(f"{head}_raw", outputs[head])
        where = where[:, None]
        outputs[key] = torch.where(where, decided_logits(action.clamp(min=0), outputs[key]), outputs[key])
        for head in ages:
            fresh = decided_logits(torch.zeros_like(action), outputs[head])
            outputs[head] = torch.where(where, fresh, outputs[head])

    def follow_death_timers(self, outputs: dict[str, torch.Tensor], last_ints: torch.Tensor) -> torch.Tensor:
        """Decide the action of each player whose death or respawn timer runs out; return
        (B, players) True where a dead player is predicted to respawn."""
        spec, sequence = self.spec, len(DEATH_OR_RESPAWN_ACTIONS)
        respawning = []
        for p in range(NUM_PLAYERS):
            action = last_ints[:, spec.int_col(p, "action")]
            age = last_ints[:, spec.int_col(p, "action_age")]
            timed = torch.where(
                action < sequence, self.timed_next_action[action.clamp(max=sequence - 1), age], -1
            )
            self.decide_action(outputs, p, timed >= 0, timed)
            dead = (action >= DEATH_ACTIONS.start) & (action < DEATH_ACTIONS.stop)
            respawning.append(dead & (outputs[f"p{p}_action_logits"].argmax(1) == REBIRTH_ACTION))
        return torch.stack(respawning, 1)

    def blast_zone_deaths(
        self,
        outputs: dict[str, torch.Tensor],
        last_floats: torch.Tensor,
        last_ints: torch.Tensor,
        stage: torch.Tensor,
    ) -> None:
        """Each alive player predicted past a known blast zone of the stage dies there: the side's
        death action, and a stock lost where that side loses it at once."""
        spec = self.spec
        delta = outputs["continuous_delta"].float()
        bounds, known = self.blast_bounds[stage], self.blast_known[stage]
        for p, slot in enumerate(self.blast_slots):
            alive = last_ints[:, spec.int_col(p, "action")] >= DEATH_OR_RESPAWN_ACTIONS.stop
            x, y = (last_floats[:, spec.float_col(p, axis)].float() + delta[:, slot[axis]] for axis in "xy")
            beyond = torch.stack([x < bounds[:, 0], x > bounds[:, 1], y < bounds[:, 2], y > bounds[:, 3]], 1)
            beyond &= known & alive[:, None]
            dies, side = beyond.any(1), beyond.float().argmax(1)
            self.decide_action(outputs, p, dies, self.blast_action[side])
            loses = dies & self.blast_stock[side]
            delta[:, slot["stocks"]] = torch.where(loses, -spec.scale("stocks"), delta[:, slot["stocks"]])
        outputs["continuous_delta"] = delta

    def follow_air_physics(
        self,
        outputs: dict[str, torch.Tensor],
        last_floats: torch.Tensor,
        last_ints: torch.Tensor,
        next_ctrl: torch.Tensor,
        stage: torch.Tensor,
    ) -> None:
        """Each player predicted airborne outside hitlag in a jump, fall or aerial attack whose
        vertical speed a rule pins (a known take-off on a jump's first frame; the fall speed
        reached, held or switched to the fast fall by a tap down; the fast-fall speed, held) gets
        the rule's next speed, its knockback decayed by ``KNOCKBACK_DECAY``, and y moved by both,
        stopped on the highest known surface whose line it crosses (landing there). With
        ``ecb_landing`` the crossing is its ECB's (``landing_reach`` above the position), a
        passable surface is fallen through with the stick held down, and a landing starts the
        action the training games' landings from the last action start. With ``air_drift`` every
        player predicted airborne outside hitlag in those actions also gets Melee's horizontal air
        speed (``air_drift_speed``) and its knockback decayed."""
        spec, controls = self.spec, len(CONTROLLER_FIELDS)
        speed_scale, knockback_scale, y_scale = (spec.scale(n) for n in ("self_y", "knockback_x", "y"))
        delta = outputs["continuous_delta"].float()
        last = last_floats.float()
        reach = self.landing_reach(last, last_ints)
        grounded = outputs["binary_logits"].index_select(1, self.surface_on_ground_logits) > 0
        landings = []
        for p, slot in enumerate(self.air_slots):

            def now(name: str, p: int = p) -> torch.Tensor:
                return last[:, spec.float_col(p, name)]

            character = last_ints[:, spec.int_col(p, "character")]
            action = outputs[f"p{p}_action_logits"].argmax(1)
            ctrl = next_ctrl[:, p * controls : (p + 1) * controls].float()
            held = (ctrl[:, CONTROLLER_FIELDS.index("X")] > 0.5) | (
                ctrl[:, CONTROLLER_FIELDS.index("Y")] > 0.5
            )
            jump = (action - JUMP_ACTIONS.start).clamp(0, len(JUMP_ACTIONS) - 1)
            taking_off = (
                (action != last_ints[:, spec.int_col(p, "action")])
                & (action >= JUMP_ACTIONS.start)
                & (action < JUMP_ACTIONS.stop)
                & self.take_off_known[character, jump, held.long()]
            )
            fall, fast = self.fall_speeds[character].unbind(1)
            speed = now("self_y") / speed_scale
            fast_falling = (speed + fast).abs() < RULE_TOLERANCE
            at_fall_speed = (speed + fall).abs() < RULE_TOLERANCE
            stick, last_stick = 2 * ctrl[:, CONTROLLER_FIELDS.index("main_y")] - 1, 2 * now("main_y") - 1
            tapped = (stick < -FAST_FALL_STICK) & (last_stick >= -FAST_FALL_STICK)
            # Melee holds a fall at the fall speed until the stick is tapped down, then at the fast-fall speed.
            next_speed = torch.where(fast_falling | (at_fall_speed & tapped), -fast, -fall)
            next_speed = torch.where(taking_off, self.take_offs[character, jump, held.long()], next_speed)
            airborne = ~grounded[:, p] & ((now("on_ground") < 0.5) | taking_off)
            calm = (now("hitlag") <= 0) & (now("hitlag") + delta[:, slot["hitlag"]] <= 0)
            applies = (
                self.free_fall[action]
                & self.fall_known[character]
                & airborne
                & calm
                & (fast_falling | at_fall_speed | taking_off)
            )
            knockback_x, knockback_y = (
                now("knockback_x") / knockback_scale,
                now("knockback_y") / knockback_scale,
            )
            # Not hypot: its gradient at no knockback is 0/0, and rules_in_training rolls out through it.
            magnitude = (knockback_x.square() + knockback_y.square()).clamp_min(1e-12).sqrt()
            keep = (1 - KNOCKBACK_DECAY / magnitude).clamp_min(0)
            y = now("y") + (next_speed + knockback_y * keep) * y_scale
            floor, crossed = self.landing_floor(
                now("x"), now("y"), y, reach[:, p], stage, stick < -FAST_FALL_STICK
            )
            lands = applies & crossed
            values = {
                "y": torch.where(lands, floor, y),
                "self_y": torch.where(lands, 0.0, next_speed) * speed_scale,
                "knockback_x": knockback_x * keep * knockback_scale,
                "knockback_y": knockback_y * keep * knockback_scale,
            }
            for name, value in values.items():
                delta[:, slot[name]] = torch.where(applies, value - now(name), delta[:, slot[name]])
            if self.air_drift:
                # A jump's first frame sets the jump's own horizontal speed, not the drift's.
                new_jump = (
                    (action != last_ints[:, spec.int_col(p, "action")])
                    & (action >= JUMP_ACTIONS.start)
                    & (action < JUMP_ACTIONS.stop)
                )
                drifting = (
                    self.free_fall[action]
                    & (now("on_ground") < 0.5)
                    & ~grounded[:, p]
                    & ~new_jump
                    & calm
                    & self.drift_known[character]
                )
                air_scale = spec.scale("self_x_air")
                stick_x = 2 * ctrl[:, CONTROLLER_FIELDS.index("main_x")] - 1
                drift = air_drift_speed(now("self_x_air") / air_scale, stick_x, self.drift[character])
                # x stays the heads': moved by these speeds too, rollouts ended further off at
                # step 60 (docs/quality-notes.md, tenth update).
                drifted = {
                    "self_x_air": drift * air_scale,
                    "knockback_x": knockback_x * keep * knockback_scale,
                }
                for name, value in drifted.items():
                    delta[:, slot[name]] = torch.where(drifting, value - now(name), delta[:, slot[name]])
            landings.append(lands)
            if self.ecb_landing:
                # A landing starts the action the training games' landings from the last one start.
                last_action = last_ints[:, spec.int_col(p, "action")].clamp(max=len(self.landing_action) - 1)
                landing = self.landing_action[last_action]
                self.decide_action(outputs, p, lands & (landing >= 0), landing)
        outputs["continuous_delta"] = delta
        on_ground = outputs["binary_logits"].index_select(1, self.surface_on_ground_logits)
        landed = torch.where(torch.stack(landings, 1), DECIDED_LOGIT, on_ground.float()).to(on_ground.dtype)
        outputs["binary_logits"] = outputs["binary_logits"].index_copy(
            1, self.surface_on_ground_logits, landed
        )

    def landing_floor(
        self,
        x: torch.Tensor,
        y_last: torch.Tensor,
        y_next: torch.Tensor,
        reach: torch.Tensor,
        stage: torch.Tensor,
        stick_down: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) the height of the highest known surface under ``x`` whose line a player moving from
        ``y_last`` to ``y_next`` crosses with its ECB (``reach`` below the position), and whether
        there is one; a passable surface is fallen through with the stick held down."""
        line, extent = self.surface_line[stage], self.surface_extent[stage]  # (B, G, 2)
        height = line[..., 0] + line[..., 1] * x[:, None]
        reach = reach[:, None]
        crossing = (
            self.surface_known[stage]
            & (x[:, None] >= extent[..., 0])
            & (x[:, None] <= extent[..., 1])
            & (height - y_last[:, None] < reach + SURFACE_TOLERANCE * self.spec.scale("y"))
            & (height - y_next[:, None] > reach)
        )
        if self.ecb_landing:
            crossing &= ~(self.surface_passable[stage] & stick_down[:, None])
        floor = torch.where(crossing, height, torch.finfo(height.dtype).min).amax(1)
        return floor, crossing.any(1)

    def respawned_deltas(
        self, delta: torch.Tensor, respawning: torch.Tensor, last_floats: torch.Tensor, stage: torch.Tensor
    ) -> torch.Tensor:
        """``delta`` (B, slots) with every field known at a respawn set to its value for each
        respawning player."""
        setting = respawning[:, self.respawn_slot_player] & self.respawn_known[stage]
        last = last_floats.index_select(1, self.delta_cols).float()
        return torch.where(setting, self.respawn_values[stage] - last, delta.float())

    def flip_table_binary_logits(
        self, outputs: dict[str, torch.Tensor], last_floats: torch.Tensor, last_ints: torch.Tensor
    ) -> torch.Tensor:
        """(B, players * binaries) logits: each binary's last value, flipped where the tables say the
        predicted transition flips it; in ``binary_logits``' order (player 0's fields, then player 1's)."""
        spec, ages = self.spec, self.flips_on_stay.shape[2]
        per_player = []
        for p in range(NUM_PLAYERS):
            action = last_ints[:, spec.int_col(p, "action")]
            predicted = outputs[f"p{p}_action_logits"].argmax(1)
            age = outputs[f"p{p}_state_age_logits"].argmax(1).clamp(max=ages - 1)
            character = last_ints[:, spec.int_col(p, "character")]
            flip = torch.where(
                (action != predicted)[:, None],
                self.flips_on_change[action, predicted],
                self.flips_on_stay[character, action, age],
            )
            last = last_floats.index_select(1, self.own_binary_cols[p]) > 0.5
            per_player.append(torch.where(last ^ flip, DECIDED_LOGIT, -DECIDED_LOGIT))
        return torch.cat(per_player, dim=1)

    def surface_heights(self, floats: torch.Tensor, stage: torch.Tensor) -> torch.Tensor:
        """(B, F) frames on ``stage`` (B,) -> (B, 2*players): per player the height above the highest
        known surface beneath (in HEIGHT_UNITs, capped) and 1 where there is none."""
        scale = self.spec.scale("y")
        line, extent = self.surface_line[stage][:, None], self.surface_extent[stage][:, None]  # (B, 1, G, 2)
        x = floats.index_select(1, self.surface_x_cols).float()[..., None]  # (B, P, 1)
        y = floats.index_select(1, self.surface_y_cols).float()[..., None]
        height = line[..., 0] + line[..., 1] * x  # (B, P, G)
        beneath = (
            self.surface_known[stage][:, None]
            & (x >= extent[..., 0])
            & (x <= extent[..., 1])
            & (height <= y + SURFACE_TOLERANCE * scale)
        )
        floor = torch.where(beneath, height, torch.finfo(height.dtype).min).amax(2)
        none = ~beneath.any(2)
        above = ((y[..., 0] - floor) / (HEIGHT_UNIT * scale)).clamp(0, HEIGHT_CAP)
        return torch.stack([torch.where(none, HEIGHT_CAP, above), none.float()], dim=2).flatten(1)

    def stand_on_surfaces(
        self,
        outputs: dict[str, torch.Tensor],
        last: torch.Tensor,
        last_ints: torch.Tensor,
        stage: torch.Tensor,
        respawning: torch.Tensor | None,
    ) -> None:
        """Each player predicted grounded takes the ground id of the known surface it is predicted
        to stand on: its predicted x within where players stood on it (``ground_span``), the
        surface at most SNAP_DISTANCE above its last position, within
        SNAP_DISTANCE of its predicted y (and its ``landing_reach`` more above it); the last
        surface where it still qualifies, else the nearest to its predicted y. A respawning
        player's ground is 0."""
        scale, delta = self.spec.scale("y"), outputs["continuous_delta"].float()
        reach = self.landing_reach(last, last_ints)[..., None]
        line, span = self.surface_line[stage][:, None], self.ground_span[stage][:, None]  # (B, 1, G, 2)
        x_last = last.index_select(1, self.surface_x_cols).float()
        x_next = (x_last + delta.index_select(1, self.surface_x_slots))[..., None]
        y_last = last.index_select(1, self.surface_y_cols).float()[..., None]  # (B, P, 1)
        y_next = y_last + delta.index_select(1, self.surface_y_slots)[..., None]
        height = line[..., 0] + line[..., 1] * x_next  # (B, P, G)
        snap = SNAP_DISTANCE * scale
        candidate = (
            self.surface_known[stage][:, None]
            & (x_next >= span[..., 0])
            & (x_next <= span[..., 1])
            & (height <= y_last + snap)
            & (y_next - height < snap)
            & (height - y_next < snap + reach)
        )
        nearest = torch.where(candidate, -(height - y_next).abs(), -torch.inf).argmax(2)  # (B, P)
        grounded = outputs["binary_logits"].index_select(1, self.surface_on_ground_logits) > 0
        # Standing on ground 0: a replay older than the ground ids, which records 0 throughout.
        unrecorded = (last.index_select(1, self.surface_on_ground_cols) > 0.5) & (
            torch.stack([last_ints[:, self.spec.int_col(p, "ground")] for p in range(NUM_PLAYERS)], 1) == 0
        )
        for p, key in enumerate(self.ground_heads):
            outputs.setdefault(f"{key}_raw", outputs[key])
            current = outputs[key].argmax(1)
            stays = candidate[:, p].gather(1, current[:, None]).squeeze(1)
            ground = torch.where(stays, current, nearest[:, p])
            if respawning is not None:
                ground = torch.where(respawning[:, p], 0, ground)
            moves = grounded[:, p] & candidate[:, p].any(1) & ~unrecorded[:, p]
            if respawning is not None:
                moves |= respawning[:, p]
            outputs[key] = torch.where(moves[:, None], decided_logits(ground, outputs[key]), outputs[key])

    def placed_on_surfaces(
        self,
        outputs: dict[str, torch.Tensor],
        last: torch.Tensor,
        last_ints: torch.Tensor,
        stage: torch.Tensor,
    ) -> torch.Tensor:
        """The continuous deltas with each player whom the heads put on the ground of a known surface
        moved to that surface's height at the predicted x (a landing player may be up to its
        ``landing_reach`` below the line)."""
        reach = self.landing_reach(last, last_ints)
        delta = outputs["continuous_delta"].float()
        tolerance = SURFACE_TOLERANCE * self.spec.scale("y")
        ground = torch.stack([outputs[key].argmax(1) for key in self.ground_heads], dim=1)  # (B, P)
        where = (stage[:, None], ground)
        line, extent = self.surface_line[where], self.surface_extent[where]  # (B, P, 2)
        x_last = last.index_select(1, self.surface_x_cols).float()
        y_last = last.index_select(1, self.surface_y_cols).float()
        x_next = x_last + delta.index_select(1, self.surface_x_slots)
        y_head = delta.index_select(1, self.surface_y_slots)
        on_surface = line[..., 0] + line[..., 1] * x_next - y_last
        # The heads may carry a landing player on down by up to its ECB's depth.
        snap = SNAP_DISTANCE * self.spec.scale("y")
        near = (y_head - on_surface < snap) & (on_surface - y_head < snap + reach)
        # Landing (from above, over the surface), or standing on the line already; a grounded
        # player off it (held in a grab or a throw) is the y head's.
        arriving = (
            (last.index_select(1, self.surface_on_ground_cols) < 0.5)
            & (on_surface <= tolerance + reach)
            & (x_next >= extent[..., 0])
            & (x_next <= extent[..., 1])
        )
        standing = (line[..., 0] + line[..., 1] * x_last - y_last).abs() <= tolerance
        grounded = outputs["binary_logits"].index_select(1, self.surface_on_ground_logits) > 0
        placed = self.surface_known[where] & grounded & near & (arriving | standing)
        return delta.index_copy(1, self.surface_y_slots, torch.where(placed, on_surface, y_head))

    def dynamics_inputs(self, float_ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The standardised float rows, and each context step's change of the predicted continuous
        fields in units of their typical change, flattened (B, (K-1)*D); both clipped so a respawn's
        jump across the stage or a value never seen in training stays a bounded input."""
        floats = float_ctx.float()
        standard = ((floats - self.float_mean) / self.float_std).clamp(-INPUT_CLIP, INPUT_CLIP)
        tracked = floats.index_select(2, self.delta_cols)
        changes = ((tracked[:, 1:] - tracked[:, :-1]) / self.delta_scale).clamp(-INPUT_CLIP, INPUT_CLIP)
        return standard, changes.flatten(1)

    def add_transition_logits(
        self,
        outputs: dict[str, torch.Tensor],
        last_frame: torch.Tensor,
        last_floats: torch.Tensor,
        next_ctrl: torch.Tensor,
        heights: torch.Tensor | None,
    ) -> None:
        """Add ``transition_head``'s logits to each player's action and jumps heads, from that
        player's part of the last embedded frame (B, E), its raw last float row's sticks and
        facing, its own controller of the predicted frame and (``stage_surfaces``) its height above
        the surface beneath; both players in one batch through the one MLP."""
        per_float, floats, per_embed = (
            self.spec.float_per_player,
            self.spec.float_per_frame,
            self.player_embed_dim,
        )
        inputs = []
        for p in range(NUM_PLAYERS):
            own_ctrl = next_ctrl.index_select(1, self.transition_ctrl_cols[p]).float()
            # A player's controller columns start with its sticks (CONTROLLER_FIELDS' order).
            sticks = stick_features(
                last_floats.index_select(1, self.transition_stick_cols[p]).float(),
                own_ctrl[:, : len(STICK_FIELDS)],
                last_floats[:, self.transition_facing_cols[p]].float(),
            )
            parts = [
                last_frame[:, p * per_float : (p + 1) * per_float],
                last_frame[:, floats + p * per_embed : floats + (p + 1) * per_embed],
                own_ctrl.to(last_frame.dtype),
                sticks.to(last_frame.dtype),
            ]
            if heights is not None:
                parts.append(heights[:, 2 * p : 2 * p + 2].to(last_frame.dtype))
            inputs.append(torch.cat(parts, dim=1))
        per_player = self.transition(torch.cat(inputs)).chunk(NUM_PLAYERS)
        binary_terms = []
        for p, logits in enumerate(per_player):
            terms = logits.split(self.transition_sizes, dim=1)
            for name, term in zip(TRANSITION_HEADS, terms[: len(TRANSITION_HEADS)], strict=True):
                outputs[f"p{p}_{name}_logits"] = outputs[f"p{p}_{name}_logits"] + term
            if self.transition_binaries:
                binary_terms.append(terms[-1])
        if binary_terms:
            # binary_logits holds player 0's fields, then player 1's (HeadLayout.binary_cols).
            outputs["binary_logits"] = outputs["binary_logits"] + torch.cat(binary_terms, dim=1)

    def embed_frames(self, float_ctx: torch.Tensor, int_ctx: torch.Tensor) -> torch.Tensor:
        """(B, K, float_per_frame) + (B, K, int_per_frame) -> (B, K, frame_embed_dim)."""
        batch, frames, _ = int_ctx.shape
        per_player = [
            self.embeddings[name](int_ctx.index_select(2, getattr(self, f"cols_{name}")))  # (B, K, 2, d)
            for name in self.spec.categorical_fields
        ]
        players = torch.cat(per_player, dim=-1).reshape(batch, frames, -1)  # [p0 fields | p1 fields]
        stage = self.embeddings["stage"](int_ctx[:, :, self.spec.stage_col])
        return torch.cat([float_ctx.to(players.dtype), players, stage], dim=-1)

    def forward(
        self, float_ctx: torch.Tensor, int_ctx: torch.Tensor, next_ctrl: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        if self.normalized_dynamics:
            standard, changes = self.dynamics_inputs(float_ctx)
            frames = self.embed_frames(standard, int_ctx)
            parts = [frames.flatten(1), changes.to(frames.dtype)]
        else:
            frames = self.embed_frames(float_ctx, int_ctx)
            parts = [frames.flatten(1)]
        stage = int_ctx[:, -1, self.spec.stage_col]
        heights = self.surface_heights(float_ctx[:, -1], stage) if self.stage_surfaces else None
        if heights is not None:
            parts.append(heights.to(frames.dtype))
        x = torch.cat([*parts, next_ctrl.to(frames.dtype)], dim=1)
        out = self.heads(self.trunk(x))
        outputs = dict(zip(self.head_sizes, out.split(list(self.head_sizes.values()), dim=1), strict=True))
        if self.transition_head:
            self.add_transition_logits(outputs, frames[:, -1], float_ctx[:, -1], next_ctrl, heights)
        if self.normalized_dynamics:
            outputs["continuous_delta"] = outputs["continuous_delta"].float() * self.delta_scale
        if self.persistence_prior:
            last_binary = float_ctx[:, -1].index_select(1, self.binary_cols).to(out.dtype)
            outputs["binary_logits"] = outputs["binary_logits"] + self.binary_prior * (2 * last_binary - 1)
            for i, (key, player, name, _) in enumerate(self.layout.logit_heads):
                last = int_ctx[:, -1, self.spec.int_col(player, name)]
                bonus = self.categorical_prior[i].to(out.dtype).expand(len(last), 1)
                outputs[key] = outputs[key].scatter_add(1, last[:, None], bonus)
                if self.categorical_gate and i in self.mixture_heads:
                    outputs[key] = keep_or_change(
                        outputs[key], outputs["categorical_change_logits"][:, i], last
                    )
        if self.motion_prior:
            # In float32: a bf16 sum would round the displacement to 3 significant digits.
            moved = (float_ctx[:, -1] - float_ctx[:, -2]).float().index_select(1, self.motion_cols)
            outputs["continuous_delta"] = (
                outputs["continuous_delta"].float().index_add(1, self.motion_slots, moved)
            )
        if self.delta_gate:
            # The raw delta is what the loss trains; the gated one is the prediction.
            outputs["continuous_delta_raw"] = outputs["continuous_delta"]
            changes = outputs["continuous_change_logits"] > 0
            if self.motion_prior and not self.motion_gate:
                changes = changes.index_fill(1, self.motion_slots, True)
            outputs["continuous_delta"] = outputs["continuous_delta"] * changes
        # The heads' own logits stay what the loss trains (``*_raw``); the decided ones are the prediction.
        for key, player, name in self.held_heads:
            last = int_ctx[:, -1, self.spec.int_col(player, name)]
            outputs[f"{key}_raw"] = outputs[key]
            outputs[key] = decided_logits(last, outputs[key])
        # Predictions only: rollout training through a respawn shows the motion prior the teleport
        # as a displacement, and exp-7j trained that way rolled out 0.4-0.7 units further
        # (BENCHMARKS.md); the blast zones' deaths likewise. The other rules also in training
        # with ``rules_in_training``.
        predicting = not self.training
        ruling = self.rules_apply
        if self.action_tables and ruling:
            self.follow_action_tables(outputs, float_ctx[:, -1], int_ctx[:, -1], next_ctrl)
        if self.respawn_sequence and predicting:
            respawning = self.follow_death_timers(outputs, int_ctx[:, -1])
        if self.blast_zones and predicting:
            self.blast_zone_deaths(outputs, float_ctx[:, -1], int_ctx[:, -1], stage)
        if self.hit_tables and ruling:
            self.land_hits(outputs, float_ctx[:, -1], int_ctx[:, -1])
        if self.binary_flip_tables:
            outputs["binary_logits_raw"] = outputs["binary_logits"]
            outputs["binary_logits"] = self.flip_table_binary_logits(
                outputs, float_ctx[:, -1], int_ctx[:, -1]
            )
        if self.hurtbox_from_invulnerable:
            for p in range(NUM_PLAYERS):
                key = f"p{p}_hurtbox_logits"
                outputs.setdefault(f"{key}_raw", outputs[key])
                outputs[key] = self.hurtbox_logits(outputs, int_ctx[:, -1], p)
        if self.ground_from_surfaces and ruling:
            self.stand_on_surfaces(
                outputs,
                float_ctx[:, -1],
                int_ctx[:, -1],
                stage,
                respawning if self.respawn_sequence and predicting else None,
            )
        if self.stage_surfaces:
            outputs["continuous_delta"] = self.placed_on_surfaces(
                outputs, float_ctx[:, -1], int_ctx[:, -1], stage
            )
        if self.respawn_sequence and predicting:
            outputs["continuous_delta"] = self.respawned_deltas(
                outputs["continuous_delta"], respawning, float_ctx[:, -1], stage
            )
        if self.air_physics and ruling:
            self.follow_air_physics(outputs, float_ctx[:, -1], int_ctx[:, -1], next_ctrl, stage)
            if self.ground_from_surfaces:
                # A landing the air rule decided is on the surface beneath.
                self.stand_on_surfaces(outputs, float_ctx[:, -1], int_ctx[:, -1], stage, None)
        if self.ground_friction and ruling:
            self.follow_ground_friction(outputs, float_ctx[:, -1], int_ctx[:, -1])
        if self.entry_platform and predicting:
            self.ride_entry_platform(outputs, float_ctx[:, -1], float_ctx[:, -2], int_ctx[:, -1])
        return outputs


def stick_features(last: torch.Tensor, now: torch.Tensor, facing: torch.Tensor) -> torch.Tensor:
    """(B, 4) encoded sticks (main x/y, c x/y; 0.5 is neutral) of the last and the predicted frame
    and (B,) facing (1: right) -> (B, 12): per frame each axis' deflection and each x axis' push
    toward the facing direction. Melee's rules are thresholds on these (a dash is the main stick
    pushed past 0.8 forward from neutral, a turn the same backward); raw, centred at 0.5, an MLP
    did not find them: a probe on the encoded sticks found 0 of 484 stand-to-dash transitions of
    the "two" training games after an epoch, with these 401 (bench/stick_probe.py)."""
    forward = (2 * facing - 1)[:, None]
    features = []
    for sticks in (last, now):
        centred = 2 * sticks - 1
        features += [centred.abs(), centred[:, ::2] * forward]
    return torch.cat(features, dim=1)


# ``air_drift_speed``'s constants per character, in this order (game units per frame).
DRIFT_CONSTANTS = ("friction", "top_speed", "acceleration_per_stick", "acceleration")


def air_drift_speed(speed: torch.Tensor, stick: torch.Tensor, drift: torch.Tensor) -> torch.Tensor:
    """Melee's next horizontal air speed (B,) from the last one (B,), the main stick's x (B,; -1..1)
    and the character's ``DRIFT_CONSTANTS`` (B, 4): inside the deadzone friction slows the speed to
    0; outside it the speed moves toward stick x top speed by acceleration_per_stick x stick plus
    acceleration toward the stick's side, and a speed already past that target the same way slows
    toward it by the friction."""
    friction, top_speed, per_stick, base = drift.unbind(1)
    slowed = speed.sign() * (speed.abs() - friction).clamp_min(0)
    target = stick * top_speed
    pushed = speed + per_stick * stick + base * stick.sign()
    toward = torch.where(stick > 0, torch.minimum(pushed, target), torch.maximum(pushed, target))
    past = (speed * stick > 0) & (speed.abs() > target.abs())
    held_back = speed.sign() * torch.maximum(speed.abs() - friction, target.abs())
    return torch.where(stick.abs() < STICK_DEADZONE, slowed, torch.where(past, held_back, toward))


def transition_cell(
    floats: torch.Tensor,
    ints: torch.Tensor,
    last_ctrl: torch.Tensor,
    next_ctrl: torch.Tensor,
    spec: EncodingSpec,
    player: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (B,) int64 cells of each frame for ``action_tables``, the character's own and one every
    character shares (its character digit one past every character's): the player's character,
    action and action_age on the last frame, and its controller: the zone (``STICK_ZONE_EDGES``)
    of each axis on the next frame (x toward the way the player faces), of the main stick on the
    last frame too, and whether each of ``TABLE_BUTTONS`` is released, pressed or held.
    ``last_ctrl`` and ``next_ctrl`` are (B, controller fields) in CONTROLLER_FIELDS' order."""
    edges = torch.tensor(STICK_ZONE_EDGES, dtype=torch.float64, device=floats.device)
    forward = 2 * (floats[:, spec.float_col(player, "facing")] > 0.5).double() - 1

    def zone(ctrl: torch.Tensor, name: str) -> torch.Tensor:
        steps = torch.round((2 * ctrl[:, CONTROLLER_FIELDS.index(name)].double() - 1) * STICK_STEPS)
        return torch.bucketize(steps * forward if name.endswith("_x") else steps, edges)

    def pressed(ctrl: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
        down = torch.stack([ctrl[:, CONTROLLER_FIELDS.index(n)] > 0.5 for n in names]).any(0)
        if "L" in names:
            down |= ctrl[:, CONTROLLER_FIELDS.index("shoulder")] > SHIELD_PRESS
        return down

    controller = torch.zeros_like(forward, dtype=torch.long)
    zones = len(STICK_ZONE_EDGES) + 1
    for ctrl, name in (
        (next_ctrl, "main_x"),
        (last_ctrl, "main_x"),
        (next_ctrl, "main_y"),
        (last_ctrl, "main_y"),
        (next_ctrl, "c_x"),
        (next_ctrl, "c_y"),
    ):
        controller = controller * zones + zone(ctrl, name)
    for names in TABLE_BUTTONS:
        now, before = pressed(next_ctrl, names), pressed(last_ctrl, names)
        controller = controller * 3 + torch.where(now, torch.where(before, 2, 1), 0)
    character, action, age = (
        ints[:, spec.int_col(player, name)].long() for name in ("character", "action", "action_age")
    )
    move = action * spec.vocab("action_age") + age
    per_character = spec.vocab("action") * spec.vocab("action_age")
    controllers = zones**6 * 3 ** len(TABLE_BUTTONS)
    own = (character * per_character + move) * controllers + controller
    shared = (spec.vocab("character") * per_character + move) * controllers + controller
    return own, shared


def hit_cell(floats: torch.Tensor, ints: torch.Tensor, spec: EncodingSpec, attacker: int) -> torch.Tensor:
    """(B,) int64 cell of each frame for ``hit_tables``: the attacker's character, action and
    action_age, and the defender's position relative to it in HIT_DISTANCE_BIN-unit cells (x toward
    the way the attacker faces), capped at HIT_DISTANCE_CELLS."""
    defender = 1 - attacker

    def offset(axis: str) -> torch.Tensor:
        apart = (
            floats[:, spec.float_col(defender, axis)] - floats[:, spec.float_col(attacker, axis)]
        ) / spec.scale(axis)
        if axis == "x":
            apart = torch.where(floats[:, spec.float_col(attacker, "facing")] > 0.5, apart, -apart)
        cells = torch.round(apart.double() / HIT_DISTANCE_BIN).clamp(-HIT_DISTANCE_CELLS, HIT_DISTANCE_CELLS)
        return cells.long() + HIT_DISTANCE_CELLS

    width = 2 * HIT_DISTANCE_CELLS + 1
    character, action, age = (
        ints[:, spec.int_col(attacker, name)].long() for name in ("character", "action", "action_age")
    )
    move = (character * spec.vocab("action") + action) * spec.vocab("action_age") + age
    return (move * width + offset("x")) * width + offset("y")


def decided_logits(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Logits (B, vocab) shaped and typed like ``like`` that decide ``values`` (B,) outright."""
    return (DECIDED_LOGIT * (2 * F.one_hot(values, like.shape[1]) - 1)).to(like.dtype)


def keep_or_change(logits: torch.Tensor, change_logit: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of "keep ``last`` with probability 1 - g, else draw from softmax(logits)",
    g = sigmoid(change_logit): (B, V) logits, (B,) change logits and last values -> (B, V)."""
    drawn = F.logsigmoid(change_logit.float())[:, None] + F.log_softmax(logits.float(), dim=1)
    kept = torch.logaddexp(F.logsigmoid(-change_logit.float()), drawn.gather(1, last[:, None]).squeeze(1))
    return drawn.scatter(1, last[:, None], kept[:, None])
