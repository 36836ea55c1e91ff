import pytest

from autolabel.errors import InputError
from autolabel.ontology import Ontology


def test_synonyms_share_a_class_and_ids_follow_first_appearance(tmp_path):
    path = tmp_path / "ontology.json"
    path.write_text('{"red mug": "mug", "cardboard box": "box", "coffee cup": "mug"}')
    ont = Ontology.load(path)
    assert ont.classes == ("mug", "box")
    assert ont.captions == ("red mug", "cardboard box", "coffee cup")
    assert ont.caption_class == (0, 1, 0)
    assert ont.to_mapping() == {"red mug": "mug", "cardboard box": "box", "coffee cup": "mug"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{}", "the ontology is empty"),
        ('["a", "b"]', "expected a JSON object"),
        ('{"a box": 3}', "class for caption 'a box' must be a non-blank string, got 3"),
        ('{"a box": "  "}', "must be a non-blank string"),
        ('{"  ": "box"}', "is blank"),
        ('{"a box": "box", "A Box": "box"}', "appears twice"),
        ('{"a box": "box", "a box": "crate"}', "appears twice"),
    ],
)
def test_invalid_ontologies_name_the_problem(tmp_path, text, message):
    path = tmp_path / "ontology.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as err:
        Ontology.load(path)
    assert str(path) in str(err.value)


def test_bad_json_reports_line_and_column(tmp_path):
    path = tmp_path / "ontology.json"
    path.write_text('{\n  "a box": "box",\n  "cup" "cup"\n}')
    with pytest.raises(InputError) as err:
        Ontology.load(path)
    assert f"{path}:3:9: invalid JSON" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="missing ontology.json"):
        Ontology.load(tmp_path / "ontology.json")


def test_a_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "ontology.json"
    path.write_bytes('\ufeff{"red mug": "mug"}'.encode())  # as Notepad saves it
    assert Ontology.load(path).classes == ("mug",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a\\u0007box": "box"}', 'caption "a\\u0007box" contains a control character (U+0007)'),
        ('{"a box": "bo\\nx"}', 'class "bo\\nx" (caption "a box") contains a control character (U+000A)'),
        ('{"a\\tbox": "box"}', 'caption "a\\tbox" contains a control character (U+0009)'),
        ('{"a box": "bo\\u0085x"}', 'class "bo\\u0085x" (caption "a box") contains a control character (U+0085)'),
        ('{"a\\ud800box": "box"}', 'caption "a\\ud800box" contains a lone surrogate (U+D800)'),
    ],
)
def test_control_characters_are_refused(tmp_path, text, message):
    path = tmp_path / "ontology.json"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        Ontology.load(path)
    assert str(err.value) == f"{path}: {message}; captions and classes must be plain text"
