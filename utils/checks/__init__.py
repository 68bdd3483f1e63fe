"""Exercise checks: each prints ✅, "not attempted yet", or a diagnosis of the likely bug.

One module per chapter's exercises; every ``check_*`` is also available from here, and
registered with a correct answer in :data:`REGISTRY` (see ``_core`` and CONTRIBUTING.md).
"""

from ._core import (
    REGISTRY,
    Case,
    CheckFailed,
    CheckResult,
    call_student,
    compare,
    custom_check,
    expect_generator,
    expect_tensor,
    register,
    run_check,
)
from .causal import (
    check_causal_attention,
    check_changed_weights,
    check_kv_step,
    check_padded_causal_attention,
)
from .cross_attention import (
    check_attention_dropout,
    check_cross_attention,
    check_design_w_q,
    check_padded_cross_attention,
    check_rows_without_translation,
)
from .hard import (
    check_gumbel_softmax,
    check_hard_attention,
    check_reinforce,
    check_straight_through,
    check_topk_attention,
)
from .multihead import (
    check_grouped_query_attention,
    check_merge_heads,
    check_next_token_head,
    check_split_heads,
    check_zeroed_heads,
)
from .scores import check_additive_scores, check_general_scores, check_learned_cosine, check_score_variance
from .self_attention import (
    check_bought_reads_milk,
    check_low_temperature,
    check_self_attention,
    check_sinusoidal,
)
from .sparse import (
    check_bigbird_mask,
    check_blockwise_attention,
    check_reach_prediction,
    check_sliding_window_mask,
)

__all__ = [
    "REGISTRY",
    "Case",
    "CheckFailed",
    "CheckResult",
    "call_student",
    "check_additive_scores",
    "check_attention_dropout",
    "check_bigbird_mask",
    "check_blockwise_attention",
    "check_bought_reads_milk",
    "check_causal_attention",
    "check_changed_weights",
    "check_cross_attention",
    "check_design_w_q",
    "check_general_scores",
    "check_grouped_query_attention",
    "check_gumbel_softmax",
    "check_hard_attention",
    "check_kv_step",
    "check_learned_cosine",
    "check_low_temperature",
    "check_merge_heads",
    "check_next_token_head",
    "check_padded_causal_attention",
    "check_padded_cross_attention",
    "check_reach_prediction",
    "check_reinforce",
    "check_rows_without_translation",
    "check_score_variance",
    "check_self_attention",
    "check_sinusoidal",
    "check_sliding_window_mask",
    "check_split_heads",
    "check_straight_through",
    "check_topk_attention",
    "check_zeroed_heads",
    "compare",
    "custom_check",
    "expect_generator",
    "expect_tensor",
    "register",
    "run_check",
]
