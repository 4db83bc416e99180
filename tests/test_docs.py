"""The documentation site builds with `mkdocs build --strict` (broken links, bad API references fail),
navigates from disk, and quotes outputs that the code really prints."""
import functools
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = Path(ROOT) / "docs"
sys.path.insert(0, str(DOCS / "hooks"))
import quoted_outputs  # noqa: E402


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs not installed: pip install -e '.[docs]'")
    pytest.importorskip("material", reason="mkdocs-material not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings_handlers.python",
                        reason="mkdocstrings[python] not installed: pip install -e '.[docs]'")
    pytest.importorskip("latex2mathml", reason="latex2mathml not installed: pip install -e '.[docs]'")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / "index.html").is_file()
    assert (site / "api.html").is_file()
    # Math is rendered at build time (MathML), so the pages need no script or network to show it.
    page = (site / "exact_vs_eprop.html").read_text()
    assert page.count("<math") >= 10
    assert "\\(" not in page and "\\[" not in page
    for path in site.rglob("*.html"):
        text = path.read_text()
        assert "mathjax" not in text.lower() and "unpkg.com" not in text, path
        assert "fonts.googleapis" not in text, path
    # Opened from disk (file://), a link to a folder shows a listing, not the page: every
    # relative link of every page must name a file that exists.
    broken = set()
    for path in site.rglob("*.html"):
        if path.parent.name == "search" or "assets" in path.parts:
            continue
        for href in re.findall(r'href="([^"#]+)(?:#[^"]*)?"', path.read_text()):
            url = urlparse(href)
            if url.scheme or url.netloc or href.startswith(("/", "mailto:")):
                continue
            target = (path.parent / unquote(url.path)).resolve()
            if not target.is_file():
                broken.add(f"{path.relative_to(site)} -> {href}")
    assert not broken, sorted(broken)[:20]


def test_wide_display_formulas_scroll_instead_of_being_clipped():
    # a centred block formula wider than the page overflows on the left, where no scroll box
    # reaches: its box must be as wide as the formula (centred by auto margins) inside a
    # wrapper that scrolls sideways
    css = (DOCS / "stylesheets" / "math.css").read_text()
    rules = dict((sel.strip(), body) for sel, body in re.findall(r"([^{}]+)\{([^}]*)\}", re.sub(r"/\*.*?\*/", "", css, flags=re.S)))
    wrapper, formula = rules[".md-typeset div.arithmatex"], rules['.md-typeset math[display="block"]']
    assert re.search(r"overflow-x:\s*auto", wrapper)
    assert re.search(r"width:\s*max-content", formula)
    assert re.search(r"margin-left:\s*auto", formula) and re.search(r"margin-right:\s*auto", formula)


def _quotes():
    return [(page.name, i) for page in sorted(DOCS.glob("*.md"))
            for i, _ in enumerate(quoted_outputs.quotes(page.read_text()))]


@functools.lru_cache(maxsize=None)
def _generated(page, index):
    quote = quoted_outputs.quotes((DOCS / page).read_text())[index]
    return quote, quoted_outputs.generate(quote)


def test_the_pages_quote_outputs():
    # the explain() report and the `sparseprop check` table are quoted and generated
    explain = quoted_outputs.quotes((DOCS / "exact_vs_eprop.md").read_text())
    check = quoted_outputs.quotes((DOCS / "getting_started.md").read_text())
    assert any(".explain(" in q.code and "method='eprop'" in q.text for q in explain)
    assert any(q.command == "sparseprop check mymodels:make_alif" and "cosine to BPTT" in q.text for q in check)


@pytest.mark.slow
@pytest.mark.parametrize("page,index", _quotes())
def test_a_quoted_output_is_what_the_code_prints(page, index):
    quote, fresh = _generated(page, index)
    assert quoted_outputs.comparable(quote.text) == quoted_outputs.comparable(fresh), (
        f"{page}: the quoted output #{index} is stale; rewrite it with "
        f"`python docs/hooks/quoted_outputs.py docs/{page}`. Fresh output:\n{fresh}")


@pytest.mark.slow
def test_figures_in_the_prose_are_those_of_the_check_output():
    index = next(i for i, q in enumerate(quoted_outputs.quotes((DOCS / "getting_started.md").read_text()))
                 if q.command.startswith("sparseprop check"))
    _, table = _generated("getting_started.md", index)
    rows = {m.group(1): m.groups()[1:] for m in re.finditer(
        r"^(exact|eprop|ostl)\s+\w+\s+(\S+)\s+(\S+)\s+(\S+ \S+)", table, re.M)}
    err, cos, mem = {k: float(v[0]) for k, v in rows.items()}, {k: float(v[1]) for k, v in rows.items()}, \
        {k: v[2] for k, v in rows.items()}
    expected = {
        "faq.md": [f"a cosine of {cos['eprop']:.4f} to BPTT, with a max relative error of {err['eprop']:.2f}",
                   f"{mem['eprop']} of traces per example (`exact`: {mem['exact']})",
                   f"its cosine is {cos['ostl']:.3f}", f"smallest traces ({mem['ostl']})"],
        "exact_vs_eprop.md": [f"with {mem['exact']} of traces per example, `eprop` reaches cosine "
                              f"{cos['eprop']:.4f} with {mem['eprop']}, and `ostl` cosine {cos['ostl']:.3f} "
                              f"with {mem['ostl']}"],
        "getting_started.md": [f"cosine {cos['eprop']:.4f}", f"cosine {cos['ostl']:.3f}"],
    }
    for page, phrases in expected.items():
        text = " ".join((DOCS / page).read_text().split())
        for phrase in phrases:
            assert phrase in text, f"{page} should say {phrase!r} (from the check output)"


def test_online_grad_describes_each_method_once_and_the_same_way():
    import sparseprop as sp
    intro, arguments = sp.online_grad.__doc__.split("**Arguments:**")
    assert set(re.findall(r"Menick et al\.\s+(\d{4})", sp.online_grad.__doc__)) == {"2020"}
    for part in (intro, arguments):
        start = part.index("e-prop")
        end = min(i for i in (part.find("ostl", start), part.find("SnAp-1", start)) if i > 0)
        eprop = " ".join(part[start:end].split())
        assert "whole step" in eprop and "from the traces" not in eprop, eprop


def test_the_pages_speak_of_the_project_only():
    for page in DOCS.glob("*.md"):
        text = " ".join(page.read_text().split())
        for words in ("lent to this task", "this task", "was not lent"):
            assert words not in text, f"{page.name}: {words!r}"
