"""The repository holds only what ships (issue 21): no weights or run folders under docs/,
a manifest that accounts for every candidate that left, generated results that name their
command, decision records one per file, and a README layout table that matches the tree."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
MANIFEST = DOCS / "candidates" / "manifest.json"
WEIGHT_SUFFIXES = {".safetensors", ".onnx", ".pt", ".pth", ".ckpt", ".bin"}


def _tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return out.stdout.splitlines()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_docs_hold_no_weights_and_no_run_folders():
    files = [p for p in DOCS.rglob("*") if p.is_file()]
    assert not [str(p) for p in files if p.suffix in WEIGHT_SUFFIXES]
    # a run folder is recognised by its report + config pair (training.engine writes both)
    run_dirs = {p.parent for p in files if p.name == "report.json"} & {p.parent for p in files
                                                                        if p.name == "config.json"}
    assert not run_dirs


def _bytes_at(commit: str, path: str) -> bytes | None:
    """A file's bytes at a commit, or None where the history is not there (a shallow clone)."""
    try:
        out = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=REPO, capture_output=True,
                             check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout


def _manifest_entries() -> list[dict]:
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    return manifest["candidates"] + manifest["runs"]


def test_manifest_accounts_for_every_removed_file():
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    assert re.fullmatch(r"[0-9a-f]{40}", manifest["git_commit_with_files"])
    entries = _manifest_entries()
    assert {e["model"] for e in manifest["candidates"]} == {"C", "D", "E", "F"}
    for e in entries:
        assert e["removed_files"], e["name"]
        for f in e["removed_files"]:
            assert re.fullmatch(r"[0-9a-f]{64}", f["sha256"]), f
            assert f["bytes"] > 0 and f["path"].startswith("docs/candidates/")
            assert not (REPO / f["path"]).exists(), f"{f['path']} is back in the tree"
            if "same_bytes_as" in f:
                # a copy of a file that shipped at the manifest's commit (the shipped file has
                # since gained metadata, e.g. the fitted tie margin): it matched then
                shipped = _bytes_at(manifest["git_commit_with_files"], f["same_bytes_as"])
                if shipped is not None:
                    assert hashlib.sha256(shipped).hexdigest() == f["sha256"], f
        for key in ("card", "robustness_report"):
            if key in e:
                assert (REPO / e[key]).is_file(), (e["name"], e[key])
        for record in e["decisions"]:
            assert (REPO / record).is_file(), record


def test_manifest_metrics_are_recorded():
    for e in json.loads(MANIFEST.read_text(encoding="utf-8"))["candidates"]:
        m = e["metrics"]
        assert 0.98 < m["mnist_test_accuracy"] <= 1, e["name"]
        assert 0 < m["validation_accuracy"] <= 1 and m["parameters"] > 0
        assert m["latency_ms_onnx"] > 0 and m["latency_ms_torch"] > 0
        # the figures agree with the report the card points at
        report = json.loads((REPO / e["robustness_report"]).read_text(encoding="utf-8"))
        assert report["summary"]["mnist_test_accuracy"] == m["mnist_test_accuracy"]
        assert f"{100 * m['mnist_test_accuracy']:.2f}%" in (REPO / e["card"]).read_text(encoding="utf-8")
    for run in json.loads(MANIFEST.read_text(encoding="utf-8"))["runs"]:
        assert 0 < run["metrics"]["validation_accuracy"] <= 1 and run["metrics"]["best_epoch"] >= 1


def test_rebuild_commands_name_real_modules_and_options():
    for e in _manifest_entries():
        assert e["rebuild"], e["name"]
        for command in e["rebuild"]:
            words = command.split()
            assert words[:2] == ["python", "-m"], command
            spec = importlib.util.find_spec(words[2])
            assert spec is not None and spec.origin, command
            source = Path(spec.origin).read_text(encoding="utf-8")
            for option in (w for w in words[3:] if w.startswith("--")):
                assert f'"{option}"' in source, f"{words[2]} has no option {option}"


def test_code_points_only_at_paths_that_exist():
    """Default paths and card text in the code name docs/ files that are there."""
    stale = []
    for path in [*sorted((REPO / "training").rglob("*.py")), *sorted((REPO / "mnist_desktop").rglob("*.py"))]:
        for ref in re.findall(r"docs/[\w./-]*[\w/]", path.read_text(encoding="utf-8")):
            if not (REPO / ref).exists():
                stale.append(f"{path.relative_to(REPO)}: {ref}")
    assert not stale


def test_markdown_links_resolve():
    pages = [REPO / "README.md", REPO / "training" / "README.md", *sorted(DOCS.rglob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)\)", page.read_text(encoding="utf-8")):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert not broken


def test_generated_results_name_their_command(monkeypatch):
    from training import zoo

    monkeypatch.chdir(REPO)     # the generator runs from the repository root

    text = (DOCS / "results" / "MODELS.md").read_text(encoding="utf-8")
    header = text.splitlines()[2]
    assert header.startswith("Produced by `python -m training.zoo ") and "docs/results/MODELS.md" in header
    # the table is exactly what the generator writes from its JSON (nothing edited by hand)
    rows = json.loads((DOCS / "results" / "models.json").read_text(encoding="utf-8"))
    command = header.split("`")[1]
    again = zoo.markdown(rows, "../shared/data/mnist", command, Path("docs/results/cv"), Path("docs/decisions"),
                         Path("docs/results"))
    assert again.splitlines()[3:] == text.splitlines()[3:]
    for folder in {p.parent for p in (DOCS / "results").rglob("*.json")}:
        readme = folder / "README.md"
        assert readme.is_file(), f"{folder} has JSON but no README naming its command"
        assert "python -m training." in readme.read_text(encoding="utf-8")


def test_decision_records_are_numbered_and_indexed():
    records = sorted(p.name for p in (DOCS / "decisions").glob("[0-9][0-9][0-9][0-9]-*.md"))
    assert [int(r[:4]) for r in records] == list(range(1, len(records) + 1))
    index = (DOCS / "decisions" / "README.md").read_text(encoding="utf-8")
    assert all(f"({r})" in index for r in records)


def _layout_table() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)/` \|", section, flags=re.M)


def test_readme_layout_table_matches_the_tree():
    tracked = _tracked_files()
    folders = {str(Path(f).parent) for f in tracked} - {"."}
    folders |= {str(p) for f in folders for p in Path(f).parents if str(p) != "."}
    listed = _layout_table()
    assert listed and not [p for p in listed if p not in folders], "the table lists a folder that is not there"
    top = {f.split("/")[0] for f in folders}
    assert not [t for t in top if not any(p == t or p.startswith(t + "/") for p in listed)]
    for parent in ("docs", "mnist_desktop"):    # their sub-folders each get a row
        subs = {f for f in folders if f.count("/") == 1 and f.startswith(parent + "/")}
        assert subs <= set(listed), subs - set(listed)
