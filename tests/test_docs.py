"""The documentation site builds with `mkdocs build --strict` (broken links, bad API references fail)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs not installed: pip install -e '.[docs]'")
    pytest.importorskip("material", reason="mkdocs-material not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings_handlers.python",
                        reason="mkdocstrings[python] not installed: pip install -e '.[docs]'")
    pytest.importorskip("latex2mathml", reason="latex2mathml not installed: pip install -e '.[docs]'")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "index.html").is_file()
    # Math is rendered at build time (MathML), so the pages need no script or network to show it.
    page = (tmp_path / "site" / "exact_vs_eprop" / "index.html").read_text()
    assert page.count("<math") >= 10
    assert "\\(" not in page and "\\[" not in page
    for path in (tmp_path / "site").rglob("*.html"):
        text = path.read_text()
        assert "mathjax" not in text.lower() and "unpkg.com" not in text, path
        assert "fonts.googleapis" not in text, path
