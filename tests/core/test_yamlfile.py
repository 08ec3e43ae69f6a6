"""custos.yamlfile: one loader, one error format (``file:line:col: field: problem``) for every file."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from custos.yamlfile import (
    FileError,
    Problem,
    YamlDocument,
    field_error,
    load_yaml_model,
    parse_yaml,
    read_yaml,
)

ONE_PROBLEM = re.compile(r"^\S+:\d+:\d+: [\w.\[\]()]+: \S.*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Route(_Strict):
    method: str = "*"
    path: str
    weight: int = 1


class Site(_Strict):
    name: str
    routes: list[Route] = Field(default_factory=list)
    owners: dict[str, int] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _lower(cls, value: str) -> str:
        if value != value.lower():
            raise ValueError(f"{value!r} must be lower case")
        return value

    @model_validator(mode="after")
    def _unique_paths(self) -> Site:
        seen: set[str] = set()
        for i, route in enumerate(self.routes):
            if route.path in seen:
                raise field_error(("routes", i, "path"), f"path {route.path!r} is listed twice")
            seen.add(route.path)
        return self


class Defaults(_Strict):
    weight: int = 1


def _problems(text: str, model: type[BaseModel] = Site) -> list[str]:
    with pytest.raises(FileError) as info:
        parse_yaml(text, "site.yaml").validate(model)
    return str(info.value).splitlines()


def test_a_syntax_error_has_the_line_and_column_of_the_mark() -> None:
    with pytest.raises(FileError) as info:
        parse_yaml("name: a\nroutes: b: c\n", "site.yaml")
    [problem] = info.value.problems
    assert (problem.line, problem.col, problem.field) == (2, 10, "(yaml)")
    assert str(problem) == "site.yaml:2:10: (yaml): not valid YAML: mapping values are not allowed here"


def test_a_wrong_type_deep_in_a_list_points_at_the_value() -> None:
    text = "name: shop\nroutes:\n  - path: /a\n  - path: /b\n    weight: heavy\n"
    assert _problems(text) == [
        "site.yaml:5:13: routes[1].weight: value 'heavy' is invalid: "
        "Input should be a valid integer, unable to parse string as an integer"
    ]


def test_flow_style_points_at_the_column() -> None:
    assert _problems("name: shop\nroutes: [{path: /a}, {path: /b, weight: x}]\n")[0].startswith(
        "site.yaml:2:41: routes[1].weight: value 'x' is invalid"
    )


def test_a_missing_field_points_at_the_mapping_that_lacks_it() -> None:
    text = "name: shop\nroutes:\n  - path: /a\n  - method: GET\n"
    assert _problems(text) == ["site.yaml:4:5: routes[1].path: Field required"]


def test_an_unknown_field_points_at_the_key() -> None:
    text = "name: shop\nroutes:\n  - path: /a\n    wieght: 2\n"
    assert _problems(text) == ["site.yaml:4:5: routes[0].wieght: unknown option (check the spelling)"]


def test_several_problems_are_each_one_line_in_file_order() -> None:
    text = "name: Shop\nroutes:\n  - {path: /a, weight: x}\n  - {path: /a}\ncolour: red\n"
    lines = _problems(text)
    assert lines == [
        "site.yaml:1:7: name: 'Shop' must be lower case",
        "site.yaml:3:24: routes[0].weight: value 'x' is invalid: "
        "Input should be a valid integer, unable to parse string as an integer",
        "site.yaml:5:1: colour: unknown option (check the spelling)",
    ]
    assert all(ONE_PROBLEM.match(line) for line in lines)


def test_a_model_validator_can_point_below_itself() -> None:
    text = "name: shop\nroutes:\n  - path: /a\n  - path: /a\n"
    assert _problems(text) == ["site.yaml:4:11: routes[1].path: path '/a' is listed twice"]


def test_dict_keys_and_top_level_problems() -> None:
    assert _problems("name: shop\nowners: {alice: lots}\n") == [
        "site.yaml:2:17: owners.alice: value 'lots' is invalid: "
        "Input should be a valid integer, unable to parse string as an integer"
    ]
    assert _problems("- name: shop\n") == ["site.yaml:1:1: (top level): must be a mapping, got a list"]
    assert _problems("routes: {path: /a}\nname: x\n") == [
        "site.yaml:1:1: routes: Input should be a valid list"
    ]


def test_an_empty_file_means_all_defaults() -> None:
    assert _problems("") == ["site.yaml:1:1: name: Field required"]
    assert parse_yaml("# nothing\n", "x.yaml").validate(Defaults).weight == 1


def test_duplicate_keys_when_asked() -> None:
    text = "name: a\nroutes:\n  - path: /a\n    path: /b\n"
    with pytest.raises(FileError) as info:
        parse_yaml(text, "site.yaml", unique_keys=True)
    assert str(info.value) == "site.yaml:4:5: routes[0].path: duplicate key"
    assert parse_yaml(text, "site.yaml").data["routes"][0]["path"] == "/b"  # YAML's own rule otherwise


def test_merge_keys_are_not_duplicates() -> None:
    text = "base: &b {path: /a, weight: 2}\nroute:\n  <<: *b\n  weight: 3\n"
    assert parse_yaml(text, "x.yaml", unique_keys=True).data["route"] == {"path": "/a", "weight": 3}


def test_a_missing_or_unreadable_file_is_one_problem(tmp_path: Path) -> None:
    with pytest.raises(FileError) as info:
        read_yaml(tmp_path / "nope.yaml", what="site file")
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: (file): site file not found"
    with pytest.raises(FileError, match=r": \(file\): cannot read site file: Is a directory$"):
        read_yaml(tmp_path, what="site file")
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"name: \xff\n")
    with pytest.raises(FileError, match=r"b.yaml: \(file\): site file is not UTF-8 text$"):
        read_yaml(binary, what="site file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_file_without_read_permission(tmp_path: Path) -> None:
    locked = tmp_path / "locked.yaml"
    locked.write_text("name: x\n")
    locked.chmod(0)
    with pytest.raises(FileError, match=r"locked.yaml: \(file\): cannot read config file: Permission denied"):
        load_yaml_model(locked, Site)


def test_load_yaml_model_reads_validates_and_names_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("name: shop\nroutes: [{path: /a}]\n")
    assert load_yaml_model(good, Site).routes[0].path == "/a"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: shop\nroutes: [{path: /a, weight: []}]\n")
    with pytest.raises(FileError) as info:
        load_yaml_model(bad, Site)
    assert str(info.value) == f"{bad}:2:21: routes[0].weight: Input should be a valid integer"


def test_str_is_one_line_per_problem_and_problems_are_data() -> None:
    problems = [
        Problem("a.yaml", 3, 7, "routes[2].permission", "not a permission"),
        Problem("b.yaml", None, None, "(file)", "policy file not found"),
    ]
    error = FileError([*problems, problems[0]])
    assert str(error) == (
        "a.yaml:3:7: routes[2].permission: not a permission\nb.yaml: (file): policy file not found"
    )
    assert error.problems == problems  # the same problem twice (union members) is reported once
    assert isinstance(error, ValueError)
    assert pickle.loads(pickle.dumps(error)).problems == problems  # e.g. from a worker process


def test_a_sub_document_and_data_without_a_file() -> None:
    doc = parse_yaml("tests:\n  - name: shop\n    routes: [{path: 5}]\n", "t.yaml")
    with pytest.raises(FileError) as info:
        doc.validate(Site, at=("tests", 0))
    assert (
        str(info.value)
        == "t.yaml:3:21: tests[0].routes[0].path: value 5 is invalid: Input should be a valid string"
    )
    with pytest.raises(FileError) as info:
        YamlDocument.from_data({"routes": [{"path": "/a"}]}, "bench").validate(Site)
    assert str(info.value) == "bench: name: Field required"


class _Outer(_Strict):
    site_file: str

    @field_validator("site_file")
    @classmethod
    def _loads(cls, value: str) -> str:
        load_yaml_model(value, Site, what="site file")
        return value


def test_problems_of_a_file_that_a_validator_loads_keep_their_own_place(tmp_path: Path) -> None:
    inner = tmp_path / "site.yaml"
    inner.write_text("name: shop\nroutes:\n  - {path: /a, colour: red}\n")
    with pytest.raises(FileError) as info:
        parse_yaml(f"site_file: {inner}\n", "outer.yaml").validate(_Outer)
    assert str(info.value) == f"{inner}:3:16: routes[0].colour: unknown option (check the spelling)"


def test_a_site_error_class_is_raised_as_is() -> None:
    class SiteError(FileError):
        pass

    with pytest.raises(SiteError):
        parse_yaml("name: [\n", "x.yaml", error=SiteError)
    doc = parse_yaml("name: Shop\n", "x.yaml", error=SiteError)
    with pytest.raises(SiteError):
        doc.validate(Site)
    doc.fail([])  # nothing to report: no error
    with pytest.raises(SiteError, match=r"^x.yaml:1:7: name: taken$"):
        doc.fail([doc.problem(("name",), "taken")])
