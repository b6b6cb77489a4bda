"""The README's examples marked '<!-- runs on the demo -->' run as written in a folder whose ./lake is the demo's
lake: $ESELAKE_DEMO_LAKE (e.g. demo-out/lake, copied first), or a stand-in with the demo's sources measured
from FITS images."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.webfixture import demo_like_lake

README = Path(__file__).resolve().parents[1] / "README.md"
MARK = "<!-- runs on the demo -->"


def examples():
    text = README.read_text()
    out = []
    for m in re.finditer(re.escape(MARK) + r"\s*\n```(\w+)\n(.*?)\n```", text, re.S):
        out.append((m.group(1), m.group(2)))
    return out


def test_readme_marks_examples():
    kinds = [k for k, _ in examples()]
    assert kinds.count("bash") >= 2 and "python" in kinds


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    work = tmp_path_factory.mktemp("readme")
    given = os.environ.get("ESELAKE_DEMO_LAKE") or (README.parent / "demo-out" / "lake")
    if Path(given).is_dir() and any(Path(given).iterdir()):
        shutil.copytree(given, work / "lake")
    else:
        demo_like_lake(work)
    return work


@pytest.mark.parametrize("k", range(len(examples())))
def test_readme_example_runs(demo_dir, k):
    kind, code = examples()[k]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("ESELAKE_LAKE", None)
    if kind == "bash":
        res = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=demo_dir, env=env,
                             capture_output=True, text=True, timeout=600)
    else:
        res = subprocess.run([sys.executable, "-c", code], cwd=demo_dir, env=env, capture_output=True, text=True,
                             timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "Traceback" not in out and "error:" not in out, out
    for name in re.findall(r"-o (\S+\.(?:png|csv|vot|pdf|svg))", code) + re.findall(r'outfile="([^"]+)"', code):
        assert (demo_dir / name).stat().st_size > 100, name
