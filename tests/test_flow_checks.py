"""The flow validator's safety checks: risky steps behind the safe-copy gate, no loops.

Each test breaks a copy of the real flows/ the way a content edit could, and expects
``python -m bot check`` (the same ``check`` function) to name the file and key.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from bot.features import standard_features
from bot.runtime import check

ROOT = Path(__file__).resolve().parent.parent
Edit = Callable[[dict[str, dict]], None]


def _broken(tmp_path: Path, edits: dict[str, Edit]) -> Path:
    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", flows)
    for name, edit in edits.items():
        path = flows / f"{name}.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        edit(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return flows


def _problems(flows: Path) -> list[str]:
    _, problems = check(ROOT / "content", flows, "en", standard_features().all)
    return [str(p) for p in problems]


def _button(data: dict, step: str, bid: str) -> dict:
    return next(b for b in data["steps"][step]["buttons"] if b["id"] == bid)


def test_the_real_flows_pass() -> None:
    assert _problems(ROOT / "flows") == []


def test_a_network_reset_reached_without_the_gate_is_named(tmp_path: Path) -> None:
    def skip_gate(data: dict) -> None:
        b = _button(data, "update_ios", "no")
        b["goto"] = "reset_network"
        b.pop("set")

    problems = _problems(_broken(tmp_path, {"backup_failed": skip_gate}))
    hit = [p for p in problems if "backup_failed.yaml" in p and "steps.reset_network.risky" in p]
    assert hit and "without the 'safe_copy' gate" in hit[0]
    assert "backup_failed.update_ios → backup_failed.reset_network" in hit[0]  # the path is shown


def test_sign_out_without_the_password_check_is_named(tmp_path: Path) -> None:
    def skip_password(data: dict) -> None:
        b = _button(data, "reset_network", "no")
        b["goto"] = "sign_out_in"
        b.pop("set")

    problems = _problems(_broken(tmp_path, {"backup_stuck": skip_password}))
    assert any("backup_stuck.yaml" in p and "steps.sign_out_in.risky" in p and "'sign_in' gate" in p
               for p in problems), problems


def test_a_new_path_into_a_risky_step_from_another_flow_is_named(tmp_path: Path) -> None:
    def shortcut(data: dict) -> None:
        data["steps"]["fine"]["buttons"].append(
            {"id": "reset", "label": "ui.other_options", "goto": "network_issue.reset_network"})

    problems = _problems(_broken(tmp_path, {"server_status": shortcut}))
    assert any("network_issue.yaml" in p and "steps.reset_network.risky" in p
               and "server_status.fine" in p for p in problems), problems


def test_entering_the_gate_without_naming_the_way_back_is_named(tmp_path: Path) -> None:
    def no_caller(data: dict) -> None:
        _button(data, "update_ios", "no").pop("set")

    def unknown_caller(data: dict) -> None:
        _button(data, "update_ios", "no")["set"] = {"gate_to": "nobody"}

    problems = _problems(_broken(tmp_path / "a", {"network_issue": no_caller}))
    assert any("network_issue.yaml" in p and "steps.update_ios.buttons[1].set" in p for p in problems), problems
    problems = _problems(_broken(tmp_path / "b", {"network_issue": unknown_caller}))
    assert any("network_issue.yaml" in p and "gate_to" in p and "'nobody'" in p for p in problems), problems


def test_a_second_copy_of_the_gate_is_refused(tmp_path: Path) -> None:
    def own_gate(data: dict) -> None:
        data["steps"]["my_gate"] = {"passes": "safe_copy", "next": "reset_network"}
        _button(data, "update_ios", "no").update({"goto": "my_gate"})

    problems = _problems(_broken(tmp_path, {"network_issue": own_gate}))
    assert any("network_issue.yaml" in p and "steps.my_gate.passes" in p for p in problems), problems


def test_a_loop_between_flows_without_progress_is_named(tmp_path: Path) -> None:
    # the loop the storage flows once had: "still full" → the plans → "free up space" → the
    # same free-space steps again
    def back_to_plans(data: dict) -> None:
        _button(data, "still_full", "which").update({"goto": "storage_plans.table"})

    problems = _problems(_broken(tmp_path, {"free_storage": back_to_plans}))
    hit = [p for p in problems if "a loop between flows" in p]
    assert hit and "free_storage.yaml" in hit[0] and ".buttons[" in hit[0]
    assert "free_storage" in hit[0] and "storage_plans" in hit[0]


def test_a_loop_that_records_new_information_is_progress(tmp_path: Path) -> None:
    def back_to_plans(data: dict) -> None:
        b = _button(data, "still_full", "which")
        b.update({"goto": "storage_plans.table", "set": {"asked_plans": "yes"}})

    assert not [p for p in _problems(_broken(tmp_path, {"free_storage": back_to_plans}))
                if "a loop between flows" in p]


def test_bot_check_fails_naming_file_and_key(tmp_path: Path) -> None:
    def skip_gate(data: dict) -> None:
        b = _button(data, "closer", "no")
        b["goto"] = "reset_network"

    flows = _broken(tmp_path, {"network_issue": skip_gate})
    out = subprocess.run([sys.executable, "-m", "bot", "check"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "FLOWS_DIR": str(flows)}, timeout=60)
    assert out.returncode == 2  # bad content is configuration: exit 2
    assert "network_issue.yaml: steps.reset_network.risky" in out.stdout + out.stderr


@pytest.mark.parametrize("risky", ["reset_network", "sign_out_in"])
def test_every_flow_marks_its_risky_fixes(risky: str) -> None:
    # a fix that can cost data or access must carry the mark the validator checks
    for path in sorted((ROOT / "flows").glob("*.yaml")):
        steps = yaml.safe_load(path.read_text(encoding="utf-8"))["steps"]
        if risky in steps:
            assert steps[risky].get("risky"), f"{path.name}: {risky} is not marked risky"
