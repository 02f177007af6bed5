"""World models, chosen by name from ``ModelConfig.name``.

Every model takes ``(float_ctx (B,K,F), int_ctx (B,K,I), next_ctrl (B,C))`` and returns a dict
with ``continuous_delta``, ``binary_logits`` and one ``p<player>_<field>_logits`` per predicted
categorical, as described by its ``layout`` (``encoding.HeadLayout``). A sequence model (Mamba-2)
registers here and the trainer needs no change.
"""

from __future__ import annotations

import torch
from torch import nn

from meleewm_core.config import EncodingConfig, ModelConfig
from meleewm_core.encoding import HeadLayout
from meleewm_core.metrics import cached_tensor, predicted_categoricals
from meleewm_core.models.mlp import FrameStackMLP

MODELS: dict[str, type[nn.Module]] = {"frame_stack_mlp": FrameStackMLP}


def build_model(encoding: EncodingConfig, model: ModelConfig) -> nn.Module:
    try:
        cls = MODELS[model.name]
    except KeyError:
        raise ValueError(f"unknown model {model.name!r}; registered: {sorted(MODELS)}") from None
    return cls(encoding, model)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def predicted_frame(
    outputs: dict[str, torch.Tensor],
    last_floats: torch.Tensor,
    last_ints: torch.Tensor,
    next_ctrl: torch.Tensor,
    layout: HeadLayout,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a prediction into the next frame's encoded rows ``(floats (B,F), ints (B,I))``.

    Predicted continuous fields are the last frame plus the predicted delta, binaries are the
    logits' sign, categoricals the argmax; the controllers come from ``next_ctrl`` (the frame's
    real inputs); every field the heads do not predict (all but four continuous fields and two
    categoricals with ``v22`` heads; stage always) is carried over from the last frame. Feed the
    result back as the newest context frame for an autoregressive rollout. The continuous
    fields keep their gradient (multi-step training back-propagates through them); binaries and
    categoricals are decisions and carry none.
    """
    spec = layout.spec
    device = last_floats.device
    floats = last_floats.float().index_add(
        1, cached_tensor(tuple(layout.continuous_cols), device), outputs["continuous_delta"].float()
    )
    floats[:, cached_tensor(tuple(layout.binary_cols), device)] = (
        outputs["binary_logits"].detach() > 0
    ).float()
    floats[:, cached_tensor(tuple(spec.controller_cols), device)] = next_ctrl[
        :, : len(spec.controller_cols)
    ].float()
    ints = predicted_categoricals(outputs, last_ints, layout)
    return floats, ints


# For rollouts at inference: the same frame, without building a graph.
next_frame = torch.no_grad()(predicted_frame)
