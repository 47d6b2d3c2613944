import json

import pytest

from pipeline import Pipeline, RecipeError
from tests.pipeline import pipeline_helpers as h

TOML = '''
name = "demo"

[[stages]]
stage = "test_scale_const"
name = "w1"
factor = 3.0

[[stages]]
stage = "test_identity"

[[stages]]
stage = "repeat_until_fixed_point"
steps = "test_identity"
max_rounds = 2
'''


def test_toml_recipe_from_file_text_and_dict(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(TOML)
    p = Pipeline.from_recipe(path)
    assert p.spec() == ('test_scale_const{factor=3.0,name="w1"},test_identity,'
                        'repeat_until_fixed_point{max_rounds=2,steps="test_identity"}')
    assert Pipeline.from_recipe(TOML) == p
    assert Pipeline.from_recipe({"stages": [{"stage": "test_identity"}]}).spec() == "test_identity"


def test_json_recipe(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"stages": [{"stage": "test_round_const", "decimals": 1}, {"stage": "test_identity"}]},
                               indent=2))
    assert Pipeline.from_recipe(path).spec() == "test_round_const{decimals=1},test_identity"
    assert Pipeline.from_recipe('[{"stage": "test_identity"}]').spec() == "test_identity"


@pytest.mark.parametrize("bad_line, needles", [
    ('factor = "three"', ["stages[0]", "'factor'", "line 7", "expected float, got str"]),
    ("factr = 3.0", ["stages[0]", "'factr'", "line 7", "unknown parameter"]),
])
def test_toml_errors_name_entry_key_and_line(bad_line, needles):
    text = TOML.replace("factor = 3.0", bad_line)
    with pytest.raises(RecipeError) as e:
        Pipeline.from_recipe(text)
    for n in needles:
        assert n in str(e.value)


def test_key_before_stage_line_is_found_after_its_header():
    text = '[[stages]]\nstage = "test_identity"\n\n[[stages]]\ndecimals = "x"\nstage = "test_round_const"\n'
    with pytest.raises(RecipeError, match=r"stages\[1\] key 'decimals' \(line 5\)"):
        Pipeline.from_recipe(text)


def test_unknown_stage_names_the_entry_and_line():
    with pytest.raises(RecipeError) as e:
        Pipeline.from_recipe(TOML.replace('stage = "test_identity"', 'stage = "no_such"'))
    assert "stages[1]" in str(e.value) and "'no_such'" in str(e.value) and "line 10" in str(e.value)


def test_json_wrong_type_names_key_and_line():
    text = '{"stages": [\n  {"stage": "test_identity"},\n  {"stage": "test_round_const",\n   "decimals": 1.5}\n]}'
    with pytest.raises(RecipeError) as e:
        Pipeline.from_recipe(text)
    assert "stages[1]" in str(e.value) and "'decimals'" in str(e.value) and "line 4" in str(e.value)


@pytest.mark.parametrize("data, needle", [
    ({"stages": []}, "non-empty"),
    ({"stagez": [{"stage": "test_identity"}]}, "stagez"),
    ({"stages": [{"nbits": 4}]}, "stage ="),
    ({"stages": ["test_identity"]}, "expected a table"),
])
def test_malformed_recipes(data, needle):
    with pytest.raises(RecipeError, match=needle):
        Pipeline.from_recipe(data)


def test_syntax_errors_are_recipe_errors():
    with pytest.raises(RecipeError, match="not valid TOML"):
        Pipeline.from_recipe("[[stages]\nstage = 1")
    with pytest.raises(RecipeError, match="not valid JSON"):
        Pipeline.from_recipe('{"stages": [}')
