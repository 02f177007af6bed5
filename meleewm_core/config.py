"""Every knob of encoding, model and training, as pydantic models that reject unknown keys.

An experiment is a YAML file in ``experiments/`` holding a few overrides of these defaults; its
file name is its name and the name of its run folder. ``load_experiment`` merges the file with
command-line overrides (dotted keys, e.g. ``{"train.epochs": 3}``) and validates the result, so a
typo or a wrong type fails before any data is touched.

This module imports only pydantic, yaml and the standard library: checkpoints carry these configs
and must load on a GPU machine that lacks polars and peppi.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

OovPolicy = Literal["clamp", "error"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncodingConfig(StrictModel):
    """Encoding v2.2 of the reference implementation (ScavieFae/nojohns ``worldmodel/``, Feb 2026).

    The defaults reproduce it bit for bit; ``encoding.EncodingSpec`` derives every dimension and
    column index from these fields.
    """

    # Multipliers that bring each continuous field to roughly unit range (slippi-ai's embed scales).
    percent_scale: float = 0.01
    xy_scale: float = 0.05
    shield_scale: float = 0.01
    velocity_scale: float = 0.05
    state_age_scale: float = 0.01
    hitlag_scale: float = 0.1
    stocks_scale: float = 0.25
    combo_count_scale: float = 0.1

    # Categorical vocabularies and learned-embedding widths. 400 actions cover every character
    # except Kirby's copy abilities (ids up to 537); 538 covers every action id.
    action_vocab: int = Field(400, ge=1)
    action_embed_dim: int = Field(32, ge=1)
    jumps_vocab: int = Field(8, ge=1)
    jumps_embed_dim: int = Field(4, ge=1)
    character_vocab: int = Field(33, ge=1)
    character_embed_dim: int = Field(8, ge=1)
    l_cancel_vocab: int = Field(3, ge=1)
    l_cancel_embed_dim: int = Field(2, ge=1)
    hurtbox_vocab: int = Field(3, ge=1)
    hurtbox_embed_dim: int = Field(2, ge=1)
    ground_vocab: int = Field(32, ge=1)
    ground_embed_dim: int = Field(4, ge=1)
    last_attack_vocab: int = Field(64, ge=1)
    last_attack_embed_dim: int = Field(8, ge=1)
    stage_vocab: int = Field(33, ge=1)
    stage_embed_dim: int = Field(4, ge=1)

    # Experiment 1a: state_age as a learned embedding instead of a scaled float.
    state_age_as_embed: bool = False
    state_age_embed_vocab: int = Field(150, ge=1)
    state_age_embed_dim: int = Field(8, ge=1)
    # Experiment 2a: 16 rising-edge button features (8 buttons x 2 players) in the conditioning.
    press_events: bool = False
    # Experiment 5a: per player, the frames since the action (post.state) began, capped at
    # vocab - 1, as a learned embedding. Melee keeps state_age at 0 while a player is dead and
    # respawns (percent reset to 0, position teleported) exactly 60 frames after the death action
    # began: without a counter no 10-frame window can see it coming.
    action_age_as_embed: bool = False
    action_age_embed_vocab: int = Field(64, ge=2)
    action_age_embed_dim: int = Field(8, ge=1)

    # What happens to a categorical value outside its vocabulary: "clamp" maps it to the last id
    # (the reference's behaviour, so v2.2 stays reproducible) and counts it; "error" stops encoding
    # and names the game, field and value.
    oov_policy: OovPolicy = "clamp"

    def identity_dump(self) -> dict[str, Any]:
        """The fields that identify an encoding (for hashes and shard folder ids)."""
        dump = self.model_dump()
        if not self.action_age_as_embed:
            # Added after the first shard sets were written: while off, the hashes (so the shard
            # folder every earlier run names) stay what they were.
            for name in ("action_age_as_embed", "action_age_embed_vocab", "action_age_embed_dim"):
                dump.pop(name)
        return dump

    def encoding_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.identity_dump(), sort_keys=True).encode()).hexdigest()[:12]


class ModelConfig(StrictModel):
    """Which model (by registry name) and its sizes. ``heads`` chooses what it predicts."""

    name: str = "frame_stack_mlp"
    context_len: int = Field(10, ge=1)
    hidden_dim: int = Field(512, ge=1)
    trunk_dim: int = Field(256, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # "v22": the reference's heads (percent/x/y/shield deltas, binaries, action, jumps).
    # "full_state": every field the next context frame needs, so a rollout can feed itself.
    heads: Literal["v22", "full_state"] = "v22"
    # Start from "repeat the last frame" and learn departures from it: the last frame's category
    # and binary values add a learned bonus to their logits, and the delta head starts at zero.
    # Repeating the last frame is right on ~93% of frames; the reference had to learn that.
    persistence_prior: bool = False
    # With persistence_prior: each categorical that the prior calibrates (repeats on >= 99% of
    # training frames: character, ground, l_cancel, hurtbox, last attack) becomes a mixture, "keep
    # the last value" with probability 1 - g, the trunk's distribution with probability g, where g
    # is a learned "does it change?" gate. The additive prior can be outvoted by a trunk that grew
    # confident on the training games (exp-7c on a validation game with a character seen in one
    # training game: character accuracy 0.894); a gate that never saw a character change stays shut.
    categorical_gate: bool = False
    # Per continuous field a "does it change?" logit; the delta is applied only where it says yes
    # and is trained on changing frames only. Sparse fields (damage, shield) then stay exactly
    # unchanged on the frames where nothing happens, instead of drifting by a regression's mean.
    delta_gate: bool = False
    # x and y deltas start from the last frame-to-frame displacement (constant velocity, which
    # beats persistence 2.5x one frame ahead) and the heads learn the departures from it; the
    # change gate never closes on them (unless motion_gate). Needs context_len >= 2.
    motion_prior: bool = False
    # With motion_prior and delta_gate: the change gate also decides whether x and y move, so a
    # standing or grounded character keeps its position (or height) exactly instead of drifting
    # by the heads' small departures, which add up over a rollout (exp-7b: 6.5 units of y error
    # after 60 frames on windows where the real y never changed).
    motion_gate: bool = False
    # Inputs and delta outputs in units the optimizer can move: each float input standardised by
    # its training mean and spread, each context step's change of every predicted continuous field
    # added as an input, and the deltas predicted in units of that field's typical change (all
    # measured on the training games; stored in the checkpoint). Raw, a 1-unit step of x is 0.05
    # on an input that spans +-10, and an air-speed change 0.003: too small for AdamW at lr 1e-3
    # to find in a few epochs.
    normalized_dynamics: bool = False
    # The stage's floors and platforms, measured from the training games: per (stage, ground id)
    # the line y = a + b*x that grounded characters stand on and its x extent (fixed surfaces
    # only; a moving platform or a clamped ground id fits no line and is left out). The trunk
    # gets each player's height above the highest surface beneath them, and a player the ground
    # head puts on a known surface is placed on it (y from the line) instead of at the y head's
    # guess: landings land at the surface's height and a grounded rollout cannot drift in y
    # (exp-7b: y barely beat persistence after 60 frames). Needs full_state heads (the ground
    # head) and delta_gate.
    stage_surfaces: bool = False
    # Each player's action and jumps logits also get logits from a small MLP shared by both
    # players that sees only that player's last frame (its floats and categorical embeddings), its
    # own controller of the predicted frame and its sticks as deflection and push toward the
    # facing side. Melee starts most actions from the player's own buttons (jump pressed while
    # standing, dashing or shielding starts the jump squat on 2,451 of 2,502 training frames of
    # "two": bench/stick_probe.py), yet the trunk, whose ~2,000 inputs dilute one button among
    # them, found 1 of 484 stand-to-dash starts of its training games (bench/transitions.py).
    # Adding the same MLP's terms to the player's deltas and binaries made the one-step y error
    # worse (0.42 against 0.34, BENCHMARKS.md).
    transition_head: bool = False
    # With transition_head: its MLP also adds to the player's binary logits (facing, invulnerable,
    # on_ground). Take-off and landing follow from what the head sees (jump squat ending, height
    # above the surface beneath); without it exp-7e flips on_ground wrongly more often than
    # persistence (0.969 against 0.981 one step ahead on "two"), with it ahead of persistence
    # in 4 of 5 runs (0.98097 against 0.98108 in the fifth). The price: rollout position error at step 60 13.9-14.4 against
    # exp-7e's 13.4-13.7 (same code and machine, BENCHMARKS.md), so exp-7e leaves it off.
    transition_binaries: bool = False
    # Each player's binaries (facing, invulnerable, on_ground) of the next frame are the last
    # frame's, flipped where the training games flip them on most frames of the same transition:
    # (last action, predicted action) when the action changes, (character, action, predicted
    # state_age) when it stays. Melee turns a player at a fixed frame of the turn animation and as
    # a turn becomes a dash (half of all facing flips in the shared replays), takes off and lands
    # with the action; the heads, held to persistence by their prior, predicted 9 facing flips on
    # the "two" validation games and none right (BENCHMARKS.md). The tables are measured on the
    # training games and saved with the weights; the heads' own logits are still trained
    # (``binary_logits_raw``). Needs full_state heads and encoding.state_age_as_embed.
    binary_flip_tables: bool = False
    # Categoricals predicted as their last value (their heads still train but do not predict):
    # fields whose changes the model does not foresee one step ahead. On the "two" validation games
    # exp-7h changed last_attack_landed (set when a hit lands, which it does not predict) on 179
    # frames, 2 of them right, where 88 changed, and ground on 17, 1 right, where 165 changed
    # (mostly landings on another surface; taking the surface beneath a predicted landing got 1 of
    # them right). Holding the ground id keeps a landing player's placement on the last surface
    # touched. hit_tables and ground_from_surfaces later decide these two where they know better.
    held_categoricals: tuple[str, ...] = ()
    # The hurtbox state is 0 (vulnerable) exactly where the invulnerable binary is 0, and keeps its
    # value while the player stays invulnerable (99.6% of its changes on "two" are flips of the
    # binary), but the hurtbox head is not tied to the binary, which the flip tables predict better
    # than persistence: on the issue 5 split the head tied persistence. With this option the
    # predicted hurtbox follows the predicted invulnerable binary: 0 when vulnerable, the last
    # state while it stays invulnerable, and on becoming invulnerable the state the training games
    # most often start with in the predicted action (``train.invulnerable_hurtbox``; saved with the
    # weights). The head's own logits still train. Needs full_state heads (the hurtbox head).
    hurtbox_from_invulnerable: bool = False
    # A hit lands where the attacker's move, its frame and the defender's position relative to the
    # attacker say so, and no head predicted one a frame ahead (last attack landed tied
    # persistence, held). With this option, where the training games' attackers in the same
    # (character, action, action_age) with the defender in the same HIT_DISTANCE_BIN-unit cell
    # (in front / behind, above / below) hit on the next frame at least three times and on more
    # than half of the cell's frames, the attacker's last attack landed becomes the move those
    # hits most often record and the defender's percent rises by their most common damage.
    # Measured on the training games (``train.hit_tables``; the ``hit_table_size`` cells with the
    # most hits, the size of the saved table) and saved with the weights; applied to predictions,
    # not in training (as respawn_sequence). Needs full_state heads and encoding.action_age_as_embed.
    hit_tables: bool = False
    hit_table_size: int = Field(4096, ge=1)
    # Melee changes a player's action by rules on the action, the frame within it and the
    # controller: a jump squat becomes a forward or backward jump on its last frame by the stick's
    # side, a dash a run where the stick stays forward, an animation ends on a fixed frame. The
    # transition head found 43% of the action changes of the issue 5 split's validation game one
    # frame ahead (a dash started from standing 4 of 28 times, a dash turned into a run 0 of 20).
    # With this option, where the training games' players in the same (character, action,
    # action_age) with the same controller cell (``models.mlp.transition_cell``: each stick's zone,
    # the main stick's last zone too, and whether each button is pressed, held or released) took
    # the same next action (or kept theirs) on at least ``action_table_min_frames`` frames and
    # ``action_table_agreement`` of them, the predicted action is that one (a new one starting at
    # the state_age its starts most often have; a cell that keeps the action does not overrule
    # heads that see the player's hitlag starting). Measured on the training games
    # (``train.action_tables``; the ``action_table_size`` cells with the most frames) and saved
    # with the weights; applied to predictions, not in training (as
    # respawn_sequence). Needs full_state heads and encoding.action_age_as_embed.
    action_tables: bool = False
    action_table_size: int = Field(131072, ge=1)
    action_table_min_frames: int = Field(3, ge=1)
    action_table_agreement: float = Field(0.9, gt=0.5, le=1.0)
    # Melee's death and respawn run on timers and end in fixed values: a player in a DEAD_* action
    # for 60 frames respawns (REBIRTH) with 0 percent, a full shield, no velocity and at the
    # stage's respawn point. Each happens a few dozen times in the training games, and exp-7i
    # predicted none of the five respawns of the issue 5 validation game, whose resets are half of
    # persistence's percent error there and a fifth of the model's position error. With this
    # option the next action of a player in the death or respawn sequence follows the
    # (action, action_age) -> action transitions the training games always take, and on a
    # predicted respawn every continuous field the training games always set there (per stage
    # and player slot; other stages get all but x and y from every stage's respawns) is set.
    # Measured on the training games and saved with the weights; applied to predictions, not in
    # training (trained with it, rollouts ended 0.4-0.7 units further off at step 60 on "two").
    # Needs encoding.action_age_as_embed (the timer).
    respawn_sequence: bool = False
    # A player predicted past the furthest x or y alive players of the training games reached on
    # the stage, on a side (left, right, bottom, top) players died through, dies: the action
    # becomes the DEAD_* action most deaths through that side start with, and the stock is lost
    # where most of them lose it on that first frame (not a star KO, which loses it later).
    # Melee ends a stock where a player crosses the stage's blast zone; no head predicted a death
    # one frame ahead, so stocks tied persistence exactly. Measured on the training games and saved
    # with the weights; applied to predictions, not in training (as respawn_sequence). Needs
    # full_state heads (the stocks head).
    blast_zones: bool = False
    # Melee holds an airborne player's vertical speed at the character's fall speed (or, once the
    # stick is tapped down, its fast-fall speed) and sets a take-off speed on a jump's first frame;
    # the y head, fed its own output, loses track of jumps and falls after a second
    # (docs/quality-notes.md). With this option a player predicted airborne (outside hitlag) in a
    # jump, fall or aerial attack whose vertical speed is pinned by such a rule (a jump's first
    # frame with a known take-off, the fall or fast-fall speed reached) gets that speed, its
    # knockback decayed by Melee's 0.051 a frame, and y moved by both, stopped on the surface
    # beneath (landing there). Other airborne frames are the heads': carried through whole arcs
    # (gravity included) the rules ended rollouts further off, the predicted action being wrong
    # too often by then. The speeds are measured per character on the training games and saved
    # with the weights; applied to predictions, not in training (as respawn_sequence). Needs
    # full_state heads and stage_surfaces (the floor).
    air_physics: bool = False
    # Melee drifts an airborne player horizontally by a rule on the main stick: outside the
    # deadzone the speed moves toward the stick's share of the character's top air speed by an
    # acceleration linear in the stick, and inside it air friction slows it; given the action the
    # rule gives the next speed exactly on 98-99% of the airborne frames of the characters with
    # the most data (docs/quality-notes.md, eighth update). With this option (with air_physics) a
    # player predicted airborne outside hitlag in a jump, fall or aerial (not on a jump's first
    # frame, which sets the jump's own speed) gets the rule's next air speed and its knockback decayed; x stays the heads' (moved by those speeds instead, the
    # issue 5 split's rollouts ended half a unit further off at step 60). ``train.air_drift`` measures
    # the friction, top speed and acceleration per character on the training games, and knows a
    # character where the rule gives the next speed on at least 90% of its frames there. Saved
    # with the weights; applied to predictions, not in training.
    air_drift: bool = False
    # Melee slows a grounded player in most actions (standing, crouching, landing lag, most
    # attacks) by the character's ground friction each frame, down to 0, while walking, dashing
    # and running follow the stick. With this option a player predicted grounded outside hitlag
    # and in the action it is in gets the friction's next ground speed where, on the training
    # games, that character's frames in that action (at least 30, 10 of them moving) follow it on
    # 97% or more. ``train.ground_friction`` measures each character's friction (the most common
    # slowdown on the ground) and those (character, action) pairs. On the issue 5 split's
    # validation game the rule gives the next ground speed exactly on every frame of its pairs
    # (3,432, 1,197 of them moving, where persistence is never right). Saved with the weights;
    # applied to predictions, not in training. Needs full_state heads (the velocity heads).
    ground_friction: bool = False
    # The ground id is the last surface a player touched: it changes where a player lands on
    # another surface, walks onto the next segment of the floor or respawns (to 0), and was held
    # (``held_categoricals``) because the head foresaw almost none of those changes. With this
    # option a player predicted grounded on the next frame takes the id of the known surface it is
    # predicted to stand on (under its predicted x, near its predicted y; the last surface where it
    # still qualifies, else the nearest), and a predicted respawn sets 0; otherwise the id is the
    # head's (held with held_categoricals). With the real next on_ground, x and y this calls 141
    # of the 165 changes of the "two" validation games and changes nothing else. Applied to
    # predictions, not in training (as respawn_sequence); the placement on a surface then uses
    # the new id. Needs stage_surfaces.
    ground_from_surfaces: bool = False
    # Melee lands a falling player when the bottom of its environment collision box (ECB), which
    # in the air sits up to ~5 game units above the position (per character and animation), crosses
    # a surface, so the position sinks below the line for a frame or three before the landing snaps
    # it back; and a player holding the stick down falls through a platform. exp-7l's air rule
    # landed players as the position crossed the line: 40 of its landings on the issue 5 split's
    # validation game came 1-3 frames early. With this option the air rule lands a player where
    # its ECB crosses a surface it may not fall through, and starts the action landings from its
    # last action start (a fall's Landing, an aerial's landing lag); a player coming down up to
    # that depth below a line is placed on it when predicted grounded, and ground_from_surfaces
    # finds it there. ``train.ecb_landings`` measures the depths per character and action, the surfaces
    # players fall through holding down and the landing actions on the training games. Saved with
    # the weights; applied to predictions, not in training. Needs stage_surfaces.
    ecb_landing: bool = False
    # Every game starts on the entry platform: the players stand still in Entry, then the platform
    # carries them up in EntryStart and down in EntryEnd at one speed per game (0.035-0.080 units
    # a frame on the training games; x never moves), before they drop onto the stage. On every
    # such frame of the shared replays the movement of the frame before, its direction set by the
    # last action, gives the next one exactly (Entry to EntryStart, whose speed no earlier frame
    # shows, aside). Those frames are 0.8% of the training frames, and exp-7r's heads sank the
    # players 2-15 units below the platform in a rollout from a game's start. With this option a
    # player whose last and predicted actions are entry actions keeps x and moves y so. No
    # measurement; applied to predictions, not in training. Needs context_len >= 2.
    entry_platform: bool = False
    # The rules above that apply to predictions only (action_tables, hit_tables, air_physics with
    # air_drift, ground_friction, ground_from_surfaces, ecb_landing) also apply in training, so
    # rollout training (train.rollout_steps) builds the same rollouts evaluation does and the x/y
    # heads learn to hedge around the rules' actions and speeds rather than the heads' own. The
    # heads' losses stay on their own outputs (``*_raw``). The respawn sequence and the blast
    # zones stay predictions only (their teleports, trained through, hurt: exp-7j).
    rules_in_training: bool = False
    # Imitation policy only: each analog field's change distribution also gets logits from a small
    # MLP shared by all ten fields (both players' sticks and shoulders) that sees only that field's
    # own recent past (position, last changes, the other axis' last change, which field). The trunk
    # sees the whole state and can fit the training players' habits; a lookup table on these few
    # features alone generalised better to an unseen game (docs/policy-notes.md).
    analog_history_head: bool = False


class LossWeights(StrictModel):
    """Per-head loss weights. The first four are the reference's; the rest weigh the full-state heads."""

    continuous: float = 1.0
    binary: float = 0.5
    action: float = 2.0
    jumps: float = 0.5
    velocity: float = 0.5
    dynamics: float = 0.5
    categorical: float = 0.5
    change_gate: float = 0.5


# ``train.augment``'s kinds (meleewm_core.augment).
Augmentation = Literal["mirror", "swap_players"]


class TrainConfig(StrictModel):
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    warmup_steps: int = Field(0, ge=0)
    min_lr_fraction: float = Field(0.0, ge=0, le=1)
    grad_clip: float = Field(1.0, ge=0)
    # "mse" is the reference's loss on the continuous deltas (in encoded units, so position
    # dominates and damage is barely learned). "mse_normalized" divides each delta by its
    # training-set standard deviation. "huber_normalized" divides by the field's mean absolute
    # change and uses a Huber loss: respawn teleports (a delta 300x the typical one) no longer
    # dominate, and the loss tracks the MAE the metrics report.
    continuous_loss: Literal["mse", "mse_normalized", "huber_normalized"] = "mse"
    loss_weights: LossWeights = LossWeights()
    device: str = "auto"
    # "auto": GPU-resident on CUDA, in RAM otherwise. "memmap" streams from the shard files.
    loader: Literal["auto", "memory", "memmap", "gpu"] = "auto"
    seed: int = 0
    # Percent of games (by MD5) in the training split; the rest validate.
    train_percent: int = Field(90, ge=1, le=99)
    max_games: int | None = Field(None, ge=1)
    # "eligible": the manifest's training games (two humans, a minute or more). "two_players":
    # every parsed two-player game, CPU and short ones too, as the reference trained on (for
    # comparisons with its figures; encoded into their own shard folder).
    games: Literal["eligible", "two_players"] = "eligible"
    # Caps for quick runs and tests; None means the whole split.
    max_train_batches: int | None = Field(None, ge=1)
    max_val_batches: int | None = Field(None, ge=1)
    val_batch_size: int | None = Field(None, ge=1)
    # torch.compile the model; None: on CUDA only (2x there, compilation costs more than it
    # saves on a short CPU run).
    compile: bool | None = None
    # "auto": bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Training-split metrics are gathered on every Nth batch (validation uses every batch): at
    # small batch sizes the metric ops cost as much as the training step.
    train_metrics_every: int = Field(8, ge=1)
    # Frames predicted per training window, each from the model's own previous predictions (its
    # continuous outputs keep their gradient): 1 is one-step (teacher-forced) training; more
    # teaches the model to keep a rollout on track. The loss is the mean over the steps;
    # validation stays one-step, so its metrics compare with every other run.
    rollout_steps: int = Field(1, ge=1)
    # What the steps after the first are scored on: "all" heads (the loss is the mean over the
    # steps), or "position": the first step keeps the whole one-step loss and the later ones add
    # the mean x/y error only, so the categorical, binary and sparse heads are never trained to
    # "correct" a drifted context (which costs them their one-step accuracy).
    rollout_loss: Literal["all", "position"] = "all"
    # Each training window is, with probability 1/2 per kind, replaced by its mirror image
    # ("mirror": x, horizontal velocities, facing and sticks flipped, on stages whose surfaces
    # pair up) or by itself with the players swapped ("swap_players"). Same number of windows.
    augment: tuple[Augmentation, ...] = ()
    wandb: bool = True
    wandb_project: str = "meleewm"


class ExperimentConfig(StrictModel):
    name: str
    description: str = ""
    encoding: EncodingConfig = EncodingConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()


class ConfigError(ValueError):
    """An experiment file or override is malformed; the message names the file and the key."""


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["train.epochs=3", "model.ungated=[a, b]"]`` -> dotted-key overrides, each value read as YAML."""
    import yaml

    overrides = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.rollout_steps=8")
        overrides[key] = yaml.safe_load(value)
    return overrides


def _set_dotted(tree: dict[str, Any], dotted_key: str, value: Any) -> None:
    *parents, leaf = dotted_key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted_key!r}: {part!r} is not a section")
    node[leaf] = value


def load_experiment(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read an experiment YAML, apply dotted-key ``overrides`` (None values are ignored), validate."""
    import yaml

    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as error:
        raise ConfigError(f"experiment file not found: {path}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, found {type(tree).__name__}")
    if "name" in tree and tree["name"] != path.stem:
        raise ConfigError(f"{path}: name {tree['name']!r} differs from the file name {path.stem!r}")
    tree["name"] = path.stem
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
    try:
        return ExperimentConfig.model_validate(tree)
    except ValueError as error:
        raise ConfigError(f"{path}: {error}") from error
