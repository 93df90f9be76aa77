"""Rules files: JSON and YAML read by one parser, and a file that is neither refused with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from recommender.online.rules import RulesError
from recommender.ops.rules import read_rules_file


def test_json_and_yaml_give_the_same_rules_and_broken_files_a_reason(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text('{"rules": [{"kind": "pin", "item_id": "i1", "position": 2}]}')
    (tmp_path / "r.yaml").write_text("rules:\n  - {kind: pin, item_id: i1, position: 2}\n")
    assert read_rules_file(tmp_path / "r.json") == read_rules_file(tmp_path / "r.yaml")
    (tmp_path / "broken.yaml").write_text("rules: [unclosed\n")
    with pytest.raises(RulesError) as broken:
        read_rules_file(tmp_path / "broken.yaml")
    assert "not valid JSON or YAML" in broken.value.errors[0]["reasons"][0]
    with pytest.raises(RulesError, match="invalid"):
        read_rules_file(tmp_path / "missing.json")
