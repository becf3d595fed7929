"""A reproduction's docstring (reStructuredText as Python writes it) as Markdown for its page.

Only what the docstrings use is converted: ````code```` and the roles ``:func:`x``` (``:class:``,
``:data:``, ``:mod:``, ``:meth:``, ...; ``~a.b`` shows ``b``) become Markdown code, ``:math:`x``` and a
``.. math::`` block become the ``$...$`` / ``$$...$$`` that ``pymdownx.arithmatex`` typesets, ``text::``
before a literal block becomes ``text:``, and an indented (literal) block a fenced code block. ``*emphasis*`` and
``**strong**`` are the same in both; any other character Markdown would read as markup (a ``*`` in
``H*W``, ``_``, ``<``, ``$``) is escaped, so the text shows as written.
"""

from __future__ import annotations

import re
import textwrap

__all__ = ["rst_to_markdown"]

_INLINE = re.compile(r"``(?P<code>.+?)``|:(?P<role>[a-z]+):`(?P<target>[^`]+)`|`(?P<plain>[^`]+)`", re.S)
# reST inline emphasis: starts after a space/start/opening bracket, is not followed by a space,
# ends after a non-space, and is not followed by a word character
_EMPHASIS = re.compile(r"(?<![\w*\\])(\*\*|\*)(?=[^\s*])(.+?)(?<=[^\s*])\1(?![\w*])", re.S)
_ESCAPE = re.compile(r"([\\_$`\[\]#|*])")


def _escape(text: str) -> str:
    """Text with nothing Markdown would read as markup (``<`` and ``&`` as HTML entities)."""
    return _ESCAPE.sub(r"\\\1", text.replace("&", "&amp;").replace("<", "&lt;"))


def _code(text: str) -> str:
    ticks = "`"
    while ticks in text:
        ticks += "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _role(role: str, target: str) -> str:
    if role == "math":
        return f"${target}$"
    title = re.fullmatch(r"(.+?)\s*<([^>]+)>", target)  # :func:`title <target>`
    if title:
        return _code(title.group(1))
    return _code(target[1:].rsplit(".", 1)[-1] if target.startswith("~") else target)


def _text(text: str) -> str:
    """Plain reST text: emphasis kept, every other Markdown special escaped."""
    out, pos = [], 0
    for m in _EMPHASIS.finditer(text):
        out += [_escape(text[pos:m.start()]), m.group(1), _escape(m.group(2)), m.group(1)]
        pos = m.end()
    out.append(_escape(text[pos:]))
    return "".join(out)


def _inline(text: str) -> str:
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(_text(text[pos:m.start()]))
        if m.group("code") is not None:
            out.append(_code(m.group("code")))
        elif m.group("role") is not None:
            out.append(_role(m.group("role"), m.group("target")))
        else:
            out.append(_code(m.group("plain")))
        pos = m.end()
    out.append(_text(text[pos:]))
    return "".join(out)


def _literal(block: str, math: bool) -> str:
    body = textwrap.dedent(block).strip("\n")
    if math:
        return f"$$\n{body}\n$$"
    ticks = "```"
    while ticks in body:
        ticks += "`"
    return f"{ticks}text\n{body}\n{ticks}"


def rst_to_markdown(doc: str) -> str:
    """The docstring as Markdown (see the module's docstring for what is converted)."""
    out: list[str] = []
    math = False  # the previous block was ``.. math::``
    for block in re.split(r"\n[ \t]*\n", doc.strip("\n")):
        if all(ln.startswith("    ") or not ln.strip() for ln in block.splitlines()):
            out.append(_literal(block, math))  # a literal block (or the math directive's body)
        elif block.strip() != ".. math::":
            if block.rstrip().endswith("::"):  # "text::" -> "text:", "text ::" and "::" -> "text", ""
                head = block.rstrip()[:-2]
                block = head.rstrip() if not head or head[-1].isspace() else head + ":"
            # bullets as "- " (a "*" would be escaped); a ">" starting a line is text, not a quote
            block = re.sub(r"^([ \t]*)[*+] ", r"\1- ", block, flags=re.M)
            out.append(re.sub(r"^([ \t]*)>", r"\1\\>", _inline(block), flags=re.M))
        math = block.strip() == ".. math::"
    return "\n\n".join(b for b in out if b) + "\n"
