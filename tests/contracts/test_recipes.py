"""Every shipped recipe loads and validates (torchtune-style config contract)."""

from pathlib import Path

import pytest

from edgestill.recipe import Recipe, load_recipe

RECIPES = sorted(Path(__file__).resolve().parents[2].joinpath("recipes").glob("*.yaml"))


def test_there_are_recipes():
    assert any(p.name == "default.yaml" for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_loads(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    assert recipe.name == path.stem
    assert 1 <= len(recipe.task.seed_examples) <= 8
