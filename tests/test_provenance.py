"""run_info.json's git state names the changed files exactly (a porcelain line starts with a status column)."""

from __future__ import annotations

import subprocess

from landmark_exp.provenance import git_state


def test_git_state_names_a_modified_tracked_file_with_its_full_path(tmp_path):
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "landmark_exp").mkdir()
    (tmp_path / "landmark_exp" / "a.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    (tmp_path / "landmark_exp" / "a.py").write_text("x = 2\n")
    state = git_state(tmp_path)
    assert state["dirty"] is True and state["changed_files"] == ["landmark_exp/a.py"]
    assert len(state["commit"]) == 40 and "\n" not in state["commit"]
