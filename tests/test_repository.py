"""The repository stands alone: no tracked file points outside it, every linked file exists."""
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT_SUFFIXES = (".py", ".md", ".cpp", ".cu", ".cuh", ".h", ".sh", ".toml", ".in", ".cfg", ".txt")


def tracked_text_files():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [p for p in out.stdout.split() if p.endswith(TEXT_SUFFIXES) or p.startswith(".ci/")]


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8", errors="replace") as f:
        return f.read()


# the sibling folder of the checkout that a clone does not have (spelled so that this file does
# not name it either)
OUTSIDE = "/".join(["..", "shared"])


def test_no_tracked_file_refers_outside_the_repository():
    offenders = [p for p in tracked_text_files() if OUTSIDE in read(p)]
    assert not offenders, f"files referring to {OUTSIDE}: {offenders}"


def test_every_markdown_link_and_named_markdown_file_exists():
    missing = []
    files = tracked_text_files()
    basenames = {os.path.basename(p) for p in files}
    for path in files:
        text = read(path)
        base = os.path.dirname(path)
        if path.endswith(".md"):  # [text](relative/path) links
            for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", text):
                if "://" in target or target.startswith("mailto:"):
                    continue
                if not os.path.exists(os.path.join(ROOT, base, target)):
                    missing.append(f"{path}: link {target}")
        for named in re.findall(r"(?<![\w./:$-])((?:[\w-]+/)+[\w.-]+\.md)\b", text):
            # from the root, or the tail of a tracked path (package data is named from its package)
            if not any(p == named or p.endswith("/" + named) for p in files):
                missing.append(f"{path}: names {named}")
        for bare in re.findall(r"(?<![/\w.-])([A-Z][A-Z_]+\.md)\b", text):
            if bare not in basenames:
                missing.append(f"{path}: names {bare}, which no tracked file is called")
    assert not missing, "\n".join(missing)
