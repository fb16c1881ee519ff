"""Parameter values, combinations and templates (torc_core.params)."""

from __future__ import annotations

import pytest

from torc_core.errors import SpecError
from torc_core.params import (
    ParameterError,
    Template,
    expand_parameters,
    format_template,
    make_combinations,
    parse_parameter_value,
    placeholder_names,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1:5", [1, 2, 3, 4, 5]),
        ("0:100:25", [0, 25, 50, 75, 100]),
        ("0:9:4", [0, 4, 8]),
        ("5:1:-2", [5, 3, 1]),
        ("0.0:1.0:0.25", [0.0, 0.25, 0.5, 0.75, 1.0]),
        ("0.0:1.0:0.1", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
        ("0.1:1.0:0.3", [0.1, 0.4, 0.7, 1.0]),
        ("[1,5,10]", [1, 5, 10]),
        ("[0.1, 0.5,0.9]", [0.1, 0.5, 0.9]),
        ("['adam','sgd','rmsprop']", ["adam", "sgd", "rmsprop"]),
        ('["a,b", "c"]', ["a,b", "c"]),
        ("[train, test, validation]", ["train", "test", "validation"]),
        ([1, "x", 2.5], [1, "x", 2.5]),
        (["l1", "l2"], ["l1", "l2"]),
        (7, [7]),
        ("solo", ["solo"]),
    ],
)
def test_parse_parameter_value(value: object, expected: list[object]) -> None:
    assert list(parse_parameter_value(value)) == expected


def test_integer_range_is_lazy() -> None:
    values = parse_parameter_value("1:500000")
    assert isinstance(values, range)
    assert len(values) == 500000 and values[0] == 1 and values[-1] == 500000


def test_float_range_types() -> None:
    values = parse_parameter_value("0.0:0.3:0.1")
    assert all(isinstance(v, float) for v in values)
    assert [str(v) for v in values] == ["0.0", "0.1", "0.2", "0.3"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1:x", "bad range '1:x': start, end and step must be numbers"),
        ("1:2:0", "bad range '1:2:0': step must not be 0"),
        ("5:1", "bad range '5:1': it is empty"),
        ("1:2:3:4", "bad range '1:2:3:4' (expected 'start:end' or 'start:end:step')"),
        ("0.0:1.0", "bad range '0.0:1.0': a float range needs a step"),
        ("[1,2", "bad list '[1,2': missing ']'"),
        ("[]", "bad list '[]': it is empty"),
        ("[1,,2]", "bad list '[1,,2]': empty item"),
        ("['a]", "bad list \"['a]\": unterminated quote"),
        ([], "the list of values is empty"),
        ([{"a": 1}], "list items must be numbers or strings, got {'a': 1}"),
        (True, "expected a string or list, got True"),
        ("@values.txt", "value file '@values.txt' was not inlined"),
    ],
)
def test_bad_parameter_values(value: object, message: str) -> None:
    with pytest.raises(ParameterError) as info:
        parse_parameter_value(value)
    assert str(info.value) == message


def test_template_formats() -> None:
    assert format_template("job_{i:03d}", {"i": 7}) == "job_007"
    assert format_template("train_lr{lr:.4f}", {"lr": 0.001}) == "train_lr0.0010"
    assert format_template("{a}-{b}-{a}", {"a": 1, "b": "x"}) == "1-x-1"


def test_template_leaves_other_braces_alone() -> None:
    text = "awk '{print $1}' ${HOME} {unknown} {{i}} ${files.input.raw_{i}} {i}"
    assert format_template(text, {"i": 3}) == (
        "awk '{print $1}' ${HOME} {unknown} {3} ${files.input.raw_3} 3"
    )


def test_template_without_parameters_is_constant_and_shared() -> None:
    text = "echo {x}"
    template = Template.compile(text, ["i"])
    assert template.constant
    assert template.render([1]) is text
    assert placeholder_names("a {i} {j:03d} ${k} {1}") == {"i", "j", "k"}


def test_template_format_error() -> None:
    template = Template.compile("x_{s:03d}", ["s"])
    with pytest.raises(ValueError):
        template.render(["abc"])


def test_product_and_zip() -> None:
    combos = make_combinations({"a": (1, 2), "b": ("x", "y", "z")}, "product")
    assert len(combos) == 6
    assert list(combos)[:3] == [(1, "x"), (1, "y"), (1, "z")]
    zipped = make_combinations({"a": (1, 2, 3), "b": ("x", "y", "z")}, "zip")
    assert list(zipped) == [(1, "x"), (2, "y"), (3, "z")]
    template = Template.compile("{b}{a:02d}", zipped.names)
    assert list(zipped.render_all(template)) == ["x01", "y02", "z03"]


def test_zip_length_mismatch() -> None:
    with pytest.raises(ParameterError) as info:
        make_combinations({"dataset": (1, 2, 3), "model": (1, 2)}, "zip")
    assert str(info.value) == (
        "all parameters must have the same number of values in zip mode: "
        "'dataset' has 3, 'model' has 2"
    )


def test_expand_parameters_dicts() -> None:
    assert expand_parameters({"i": "1:2", "s": "['a','b']"}) == [
        {"i": 1, "s": "a"},
        {"i": 1, "s": "b"},
        {"i": 2, "s": "a"},
        {"i": 2, "s": "b"},
    ]
    with pytest.raises(SpecError):
        expand_parameters({"i": "1:2"}, "diagonal")
