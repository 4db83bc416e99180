"""Outputs quoted in the documentation are made by code, so they cannot go stale.

A page marks a quoted output with an HTML comment (invisible on the site) just before its
```text block:

- `<!-- output of the code above -->`: the page's last ```python block before the comment
  is run as a script; the text block is what it prints.
- `<!-- output of: sparseprop check mymodels:make_alif -->`: the last ```python block,
  whose first line is `# mymodels.py`, is saved as that module and the command is run
  (`sparseprop ...` as `python -m sparseprop.cli ...`); the text block is `$ <command>`
  followed by what it prints.

Both run on the CPU with this repository first on the path; source paths in the output are
shortened to the repository root. `tests/test_docs.py` regenerates every quoted output and
compares it with the page (numbers at rounding level, below 1e-9, are compared as such, not
digit for digit). After a change that moves them, rewrite the pages with

    python docs/hooks/quoted_outputs.py docs/*.md
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, NamedTuple

ROOT = Path(__file__).resolve().parents[2]

_CODE = re.compile(r"```python\n(.*?)```", re.S)
_QUOTE = re.compile(r"<!-- output of(?: the code above|: (?P<command>[^>]*?)) -->\n```text\n(?P<text>.*?)```", re.S)
# a float at rounding level (|x| < 1e-9, written in scientific notation)
_ROUNDING = re.compile(r"\b\d\.\d+e-(?:1\d|[2-9]\d)\b")


class Quote(NamedTuple):
    """One quoted output: where its text sits on the page, the code and the command that make it."""
    start: int          # offsets of the quoted text in the page
    end: int
    text: str
    code: str
    command: str        # "" for "the code above"


def quotes(page: str) -> List[Quote]:
    """The quoted outputs of a page's markdown, in order.

    **Raises:**

    `ValueError` for a marker with no ```python block before it.
    """
    found = []
    for m in _QUOTE.finditer(page):
        blocks = _CODE.findall(page, 0, m.start())
        if not blocks:
            raise ValueError(f"a quoted output at offset {m.start()} has no ```python block before it")
        found.append(Quote(m.start("text"), m.end("text"), m.group("text"), blocks[-1], m.group("command") or ""))
    return found


def generate(quote: Quote, timeout: float = 900) -> str:
    """Run the code (and command) of a quote; return its output as the page shows it.

    **Raises:**

    `RuntimeError` with the output when the code or the command fails.
    """
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as tmp:
        if quote.command:
            first = quote.code.splitlines()[0]
            module = re.fullmatch(r"#\s*(\w+\.py)\s*", first)
            if module is None:
                raise ValueError(f"the code before `{quote.command}` must start with a `# module.py` line")
            (Path(tmp) / module.group(1)).write_text(quote.code)
            argv = shlex.split(quote.command)
            if argv[0] == "sparseprop":
                argv = [sys.executable, "-m", "sparseprop.cli"] + argv[1:] + (
                    ["--no-progress"] if argv[1] == "check" else [])
            env["PYTHONPATH"] = os.pathsep.join([tmp, env["PYTHONPATH"]])
        else:
            script = Path(tmp) / "snippet.py"
            script.write_text(quote.code)
            argv = [sys.executable, str(script)]
        result = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0 and not quote.command:
        raise RuntimeError(f"the quoted code failed:\n{result.stdout}\n{result.stderr}")
    out = result.stdout.replace(str(ROOT) + os.sep, "")
    if quote.command:
        if not out.strip():
            raise RuntimeError(f"`{quote.command}` printed nothing:\n{result.stderr}")
        out = f"$ {quote.command}\n{out}"
    return out.rstrip("\n") + "\n"


def comparable(text: str) -> str:
    """`text` with rounding-level numbers (which vary with the platform) replaced by a mark."""
    return _ROUNDING.sub("<rounding>", text)


def update(path: Path) -> int:
    """Rewrite the quoted outputs of one page; return how many changed."""
    page = path.read_text()
    changed, pieces, last = 0, [], 0
    for quote in quotes(page):
        new = generate(quote)
        changed += comparable(new) != comparable(quote.text)
        pieces += [page[last:quote.start], new]
        last = quote.end
    if changed:
        path.write_text("".join(pieces) + page[last:])
    return changed


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"{name}: {update(Path(name))} quoted output(s) rewritten")
