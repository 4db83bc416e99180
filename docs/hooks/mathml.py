"""MkDocs hook: render the pages' math to MathML at build time, so the site needs no script,
font or network to show it (browsers draw MathML natively).

`pymdownx.arithmatex` (generic mode) wraps `$...$` as `<span class="arithmatex">\\(...\\)</span>`
and `$$...$$` as `<div class="arithmatex">\\[...\\]</div>`; this hook replaces each wrapper's
TeX by the MathML that latex2mathml (a pure-Python converter on PyPI) makes of it. A formula it
cannot convert fails the build and names the page.
"""
import html
import re

from latex2mathml.converter import convert

_MATH = re.compile(r'<(span|div) class="arithmatex">\\[(\[](.*?)\\[)\]]</\1>', re.S)


def on_page_content(content, page, config, files):
    def render(match):
        tag, tex = match.group(1), html.unescape(match.group(2)).strip()
        try:
            mathml = convert(tex, display="block" if tag == "div" else "inline")
        except Exception as e:  # latex2mathml raises its own exception types
            raise ValueError(f"{page.file.src_path}: cannot render the formula {tex!r} to MathML: {e}") from e
        return f'<{tag} class="arithmatex">{mathml}</{tag}>'
    return _MATH.sub(render, content)
