"""Sections of docs/benchmarks.md that belong to their own script.

bench.sh rewrites the file; scale.sh and pair.sh (tls, sse, deflate) each own one section between
two markers (`<!-- scale:begin -->` … `<!-- scale:end -->`), which bench.sh
keeps as it was and a new run of its script replaces.
"""

OWNED = ("scale", "tls", "sse", "deflate")


def markers(name):
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def into(path, name, section_path):
    """Puts the section in `section_path` into `path` as section `name`."""
    begin, end = markers(name)
    section = open(section_path).read().strip()
    try:
        text = open(path).read()
    except FileNotFoundError:
        text = "# Benchmarks\n"
    block = f"{begin}\n{section}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    open(path, "w").write(text)


def kept(path, name):
    """Section `name` of an existing file, markers included ("" if none)."""
    begin, end = markers(name)
    try:
        text = open(path).read()
    except FileNotFoundError:
        return ""
    if begin in text and end in text:
        return text[text.index(begin) : text.index(end) + len(end)]
    return ""
