"""Training goals: auto-selection, the learning rate sized to the model, the knowledge plan."""

from __future__ import annotations

from dataclasses import replace

import pytest

from finetuneflow.train.config import RecallSettings, TrainConfig
from finetuneflow.train.recipe import (
    KNOWLEDGE_EPOCHS,
    STYLE_LR,
    goal_plan,
    learning_rate_for,
    pick_goal,
    resolve,
)

SMOLLM2 = 134_515_008


@pytest.mark.parametrize(
    ("goal", "has_text", "picked"),
    [("auto", True, "knowledge"), ("auto", False, "style"), ("style", True, "style"),
     ("knowledge", False, "knowledge")],
)  # fmt: skip
def test_auto_picks_knowledge_only_for_datasets_from_documents(
    goal: str, has_text: bool, picked: str
) -> None:
    assert pick_goal(TrainConfig(goal=goal), has_text) == picked  # type: ignore[arg-type]


def test_learning_rate_falls_with_model_size_and_style_keeps_todays() -> None:
    small, big, huge = (learning_rate_for(n, "knowledge") for n in (SMOLLM2, 1_000_000_000, 70_000_000_000))
    assert small == pytest.approx(1e-3, rel=0.05)
    assert small > big > huge >= 5e-5
    assert learning_rate_for(SMOLLM2, "style") == STYLE_LR == 2e-4


def test_resolve_keeps_what_the_user_set_and_leaves_the_config_alone() -> None:
    asked = TrainConfig(goal="knowledge", learning_rate=3e-4)
    recipe = resolve(asked, SMOLLM2, has_document_text=False)
    assert recipe.cfg.learning_rate == 3e-4 and recipe.cfg.epochs == KNOWLEDGE_EPOCHS
    assert asked.learning_rate == 3e-4 and asked.epochs == 3.0 and asked.goal == "knowledge"
    capped = resolve(replace(asked, max_steps=40), SMOLLM2, False)
    assert capped.cfg.max_steps == 40 and capped.cfg.epochs == KNOWLEDGE_EPOCHS  # steps: the ceiling
    assert any("up to 40 steps" in n for n in capped.notes)
    assert resolve(replace(asked, epochs=2.0), SMOLLM2, False).cfg.epochs == 2.0  # set by the user: kept
    style = resolve(TrainConfig(), SMOLLM2, has_document_text=False)
    assert style.goal == "style" and style.cfg.epochs == 3.0 and style.cfg.learning_rate == STYLE_LR
    assert any("auto" in n for n in style.notes)


def test_plan_of_the_knowledge_goal_gives_budgets_that_cost_less_and_say_what_they_give_up() -> None:
    speed = {"tokens_per_s": 200.0, "cores": 2, "bf16": True}
    out = goal_plan(TrainConfig(), SMOLLM2, True, [100] * 200, speed)
    assert out["goal"] == "knowledge" and out["speed_source"] == "measured" and out["tokens_per_s"] == 200
    budgets = out["budgets"]
    assert [b["epochs"] for b in budgets] == sorted((b["epochs"] for b in budgets), reverse=True)
    assert all(a["seconds"] > b["seconds"] for a, b in zip(budgets, budgets[1:], strict=False))
    # ~20k tokens a pass at 200 tokens/s: 12 passes take at least 12 x 100 s, probes on top
    assert budgets[0]["seconds"] > 12 * 20_000 / 200
    replayed = goal_plan(TrainConfig(recall=RecallSettings(replay=0.5)), SMOLLM2, True, [100] * 200, speed)
    assert replayed["budgets"][0]["seconds"] > 1.4 * budgets[0]["seconds"]  # replay rows cost time too
    rehearsed = goal_plan(
        TrainConfig(recall=RecallSettings(rehearsal=0.5)), SMOLLM2, True, [100] * 200, speed
    )
    # as many rows again, and generating the answers is paid once, even by the smallest budget
    assert rehearsed["budgets"][-1]["seconds"] > replayed["budgets"][-1]["seconds"] + 60
    assert all(b["gives_up"] for b in budgets)
    guessed = goal_plan(
        TrainConfig(), SMOLLM2, True, [100] * 200, {"tokens_per_s": None, "cores": 2, "bf16": True}
    )
    assert guessed["speed_source"] == "estimated" and guessed["tokens_per_s"] > 0
    assert "budgets" not in goal_plan(TrainConfig(), SMOLLM2, False, [100], speed)  # style: nothing to plan
