"""One report, two renderings: the markdown and the self-contained HTML are made from the same
list of blocks, so they cannot drift apart. The HTML needs no network: plots are inline base64
PNGs and the table sorting is a few lines of our own script."""

from __future__ import annotations

import base64
import html
import os
import re
from typing import Any, Sequence

Block = dict[str, Any]


def heading(text: str, level: int = 2) -> Block:
    return {"type": "heading", "text": text, "level": level}


def paragraph(text: str) -> Block:
    return {"type": "paragraph", "text": text}


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> Block:
    return {"type": "table", "header": list(header), "rows": [list(r) for r in rows]}


def image(path: str, alt: str) -> Block:
    """A PNG, ``path`` relative to the report's directory."""
    return {"type": "image", "path": path, "alt": alt}


def code(text: str) -> Block:
    return {"type": "code", "text": text}


def items(entries: Sequence[str]) -> Block:
    return {"type": "list", "items": list(entries)}


def to_markdown(blocks: Sequence[Block]) -> str:
    out = []
    for b in blocks:
        kind = b["type"]
        if kind == "heading":
            out += ["#" * b["level"] + " " + b["text"], ""]
        elif kind == "paragraph":
            out += [b["text"], ""]
        elif kind == "table":
            out += ["| " + " | ".join(b["header"]) + " |", "|" + "---|" * len(b["header"])]
            out += ["| " + " | ".join(r) + " |" for r in b["rows"]] + [""]
        elif kind == "image":
            out += [f"![{b['alt']}]({b['path']})", ""]
        elif kind == "code":
            out += ["```", b["text"], "```", ""]
        elif kind == "list":
            out += [f"- {item}" for item in b["items"]] + [""]
    return "\n".join(out)


def _inline(text: str) -> str:
    """Escaped text with the two markdown marks the report uses: **bold** and `code`."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.4}table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:left;vertical-align:top}
th{background:#f3f3f3;cursor:pointer}th:hover{background:#ddd}
img{max-width:100%}pre{background:#f6f6f6;padding:0.6em;overflow-x:auto;font-size:0.8em}"""

# Click a header to sort by that column (numbers by value, text alphabetically; again: reverse).
_SORT = """document.querySelectorAll('table.sortable').forEach(function (t) {
  t.querySelectorAll('th').forEach(function (th, i) {
    th.addEventListener('click', function () {
      var body = t.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var up = th.getAttribute('data-up') !== '1';
      rows.sort(function (a, b) {
        var x = a.cells[i].textContent, y = b.cells[i].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
        return up ? c : -c;
      });
      th.setAttribute('data-up', up ? '1' : '0');
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});"""


def to_html(blocks: Sequence[Block], base_dir: str, title: str) -> str:
    """A standalone page; images are read from ``base_dir`` and inlined."""
    out = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
           f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"]
    for b in blocks:
        kind = b["type"]
        if kind == "heading":
            out.append(f"<h{b['level']}>{_inline(b['text'])}</h{b['level']}>")
        elif kind == "paragraph":
            out.append(f"<p>{_inline(b['text'])}</p>")
        elif kind == "table":
            out.append("<table class=\"sortable\"><thead><tr>"
                       + "".join(f"<th>{_inline(h)}</th>" for h in b["header"])
                       + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>"
                    for r in b["rows"]]
            out.append("</tbody></table>")
        elif kind == "image":
            with open(os.path.join(base_dir, b["path"]), "rb") as f:
                data = base64.b64encode(f.read()).decode("ascii")
            out.append(f"<figure><img alt=\"{html.escape(b['alt'])}\" "
                       f"src=\"data:image/png;base64,{data}\"></figure>")
        elif kind == "code":
            out.append(f"<pre>{html.escape(b['text'])}</pre>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b["items"]) + "</ul>")
    out += [f"<script>{_SORT}</script>", "</body></html>"]
    return "\n".join(out) + "\n"


def write(blocks: Sequence[Block], directory: str, name: str, title: str) -> list[str]:
    """NAME.md and NAME.html in ``directory``; returns their paths."""
    paths = [os.path.join(directory, name + ".md"), os.path.join(directory, name + ".html")]
    with open(paths[0], "w") as f:
        f.write(to_markdown(blocks))
    with open(paths[1], "w") as f:
        f.write(to_html(blocks, directory, title))
    return paths
