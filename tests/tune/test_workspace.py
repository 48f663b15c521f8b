"""loravc.tune.workspace: what a trial killed during DVC's set-up leaves is undone, and nothing of the user's."""

from pathlib import Path

from loravc.tune.workspace import repair_workspace
from loravc.versions.gitrepo import GitRepo
from tests.conftest import git

COMMIT = ("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm")
PARAMS = "train:\n  lora:\n    r: 4\n    dropout: 0.05\n"
OVERRIDES = ["train.lora.r=16"]


def repo_on_main(path: Path) -> Path:
    """A repository on branch main whose last two commits hold params.yaml."""
    git(path, "init", "-q", "-b", "main")
    (path / "params.yaml").write_text(PARAMS)
    git(path, "add", "params.yaml")
    git(path, *COMMIT, "params")
    (path / "README.md").write_text("notes\n")
    git(path, "add", "README.md")
    git(path, *COMMIT, "notes")
    return path


def test_head_params_and_the_index_lock_left_by_dvcs_set_up_are_restored(tmp_path: Path) -> None:
    from dvc.utils.hydra import apply_overrides

    repo = repo_on_main(tmp_path)
    git(repo, "checkout", "-q", "--detach")  # what `dvc exp run --temp` has done when a kill -9 stops it
    apply_overrides(repo / "params.yaml", OVERRIDES)
    git(repo, "add", "params.yaml")
    lock = repo / ".git" / "index.lock"
    lock.write_text("")  # left by the git process killed with it
    ref_lock = repo / ".git" / "refs" / "exps" / "stash.lock"  # left by DVC, killed while it wrote a ref
    ref_lock.parent.mkdir(parents=True)
    ref_lock.write_text("")
    said: list[str] = []
    repair_workspace(repo, GitRepo(repo), 3, "main", OVERRIDES, said.append)
    assert said == [
        "trial 3: removed .git/index.lock, left by a git process killed with the trial",
        "trial 3: removed .git/refs/exps/stash.lock, left by a git process killed with the trial",
        "trial 3: HEAD was left detached by DVC's set-up of the trial: back on main",
        "trial 3: params.yaml held the trial's overrides, left by DVC's set-up: restored",
    ]
    assert not lock.exists() and not ref_lock.exists() and git(repo, "symbolic-ref", "--short", "HEAD") == "main"
    assert git(repo, "status", "--porcelain") == "" and (repo / "params.yaml").read_text() == PARAMS


def test_a_change_of_the_users_is_left_as_it_is(tmp_path: Path) -> None:
    repo = repo_on_main(tmp_path)
    git(repo, "checkout", "-q", "--detach", "HEAD~1")  # the user looks at an older commit: not main's tip
    edited = PARAMS.replace("dropout: 0.05", "dropout: 0.1")
    (repo / "params.yaml").write_text(edited)  # and edits params.yaml: not the trial's overrides
    git(repo, "add", "params.yaml")
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    said: list[str] = []
    with lock.open("rb"):  # a live git holds the lock
        repair_workspace(repo, GitRepo(repo), 3, "main", OVERRIDES, said.append)
    assert said == []
    assert lock.exists()
    lock.unlink()
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"  # still detached
    assert git(repo, "diff", "--cached", "--name-only") == "params.yaml"  # still staged
    assert (repo / "params.yaml").read_text() == edited


def test_without_a_branch_of_record_head_stays_where_it_is(tmp_path: Path) -> None:
    repo = repo_on_main(tmp_path)
    git(repo, "checkout", "-q", "--detach")
    said: list[str] = []
    repair_workspace(repo, GitRepo(repo), 0, None, OVERRIDES, said.append)  # a trial that recorded no branch
    assert said == [] and git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"
