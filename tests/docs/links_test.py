#!/usr/bin/python3
"""links_test.py: every relative link in the project's markdown points at something that exists.

Checked files: README.md, docs/*.md, deploy/README.md and every other tracked *.md
(`git ls-files '*.md'` when git and a work tree are there; otherwise every *.md under the root,
leaving out build*/ folders, node_modules and hidden folders).

In each file, outside fenced and indented code blocks and inline code spans, it finds every
inline link or image, `[text](target)` or `![alt](target)`, and every reference definition,
`[label]: target`. Targets with a URL scheme (http:, https:, mailto:, ...) are skipped. A
relative target must name an existing file or folder, relative to the markdown file's own
folder (or to the root when it starts with '/'). A `#anchor` on a markdown file must be one of
that file's headings, as GitHub makes their ids: the heading's text lower-cased, everything but
letters, digits, spaces, hyphens and underscores removed, each space turned into a hyphen;
repeated headings get -1, -2, ... Headings inside code blocks do not count; explicit anchors
(`<a name="x">`, `id="x"`) do. A bare `#anchor` is checked against the file itself.

Usage:
  /usr/bin/python3 tests/docs/links_test.py REPO_ROOT
  /usr/bin/python3 tests/docs/links_test.py --self-test
Prints one line per broken link (file:line: target: reason) and exits 1, else a one-line
summary. --self-test checks a temporary folder holding a good link, a link to a missing file
and one to a missing anchor (plus links and headings in code, which must be ignored), and
asserts that exactly the two broken ones are reported. ctest runs both (docs_links_selftest,
docs_links_test).
"""

import glob
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse

MARKDOWN = (".md", ".markdown")

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
LIST_ITEM = re.compile(r"^ {0,3}(?:[-+*]|\d{1,9}[.)])(?:[ \t]|$)")
# [text](target "title"): the text may hold one level of brackets, the target balanced parens.
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]\\]|\\.|\[(?:[^\[\]\\]|\\.)*\])*\]"
    r"\(\s*(<[^<>\n]*>|(?:[^\s()\\]|\\.|\((?:[^\s()\\]|\\.)*\))+)"
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^()]*\)))?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[((?:[^\[\]\\]|\\.)+)\]:[ \t]*(<[^<>\n]*>|\S+)")
EXPLICIT_ANCHOR = re.compile(r"<[A-Za-z][^>]*?\b(?:name|id)\s*=\s*[\"']?([^\"'\s>]+)", re.I)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def strip_code_spans(line):
    """The line with every `code span` replaced by spaces (an unmatched run stays as it is)."""
    out, i = [], 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line):
            out.append(line[i:i + 2])
            i += 2
            continue
        if line[i] != "`":
            out.append(line[i])
            i += 1
            continue
        run = len(line[i:]) - len(line[i:].lstrip("`"))
        m = re.compile(r"(?<!`)`{%d}(?!`)" % run).search(line, i + run)
        if m is None:
            out.append(line[i:i + run])
            i += run
            continue
        out.append(" " * (m.end() - i))
        i = m.end()
    return "".join(out)


def prose_lines(text):
    """(line number, line) of every line outside fenced and indented code blocks."""
    fence = None
    prev_blank = True
    in_indented = False
    in_list = False
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                    and not line.strip().strip(fence[0]):
                fence = None
            continue
        if m and not (m.group(1)[0] == "`" and "`" in line.strip()[len(m.group(1)):]):
            fence = m.group(1)
            prev_blank = False
            in_indented = False
            continue
        blank = not line.strip()
        indented = line.startswith("    ") or line.startswith("\t")
        if not blank and not indented:
            in_list = bool(LIST_ITEM.match(line)) or (in_list and not prev_blank)
        if indented and not blank and (in_indented or (prev_blank and not in_list)):
            in_indented = True
            prev_blank = False
            continue
        if not blank:
            in_indented = False
        prev_blank = blank
        yield number, line


def heading_text(raw):
    """What a heading shows: links as their text, no code-span backticks, no HTML tags."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", raw)
    text = re.sub(r"<[^>]+>", "", text)
    text = text.replace("`", "")
    text = re.sub(r"(\*{1,3})(\S(?:.*?\S)?)\1", r"\2", text)
    return text.strip()


def github_slug(text):
    slug = re.sub(r"[^\w\- ]", "", heading_text(text).lower())
    return slug.replace(" ", "-")


def anchors_of(text):
    """Every id a link can name in this markdown text."""
    anchors, seen = set(), {}
    previous = None  # the last prose line, for setext headings

    def add(heading):
        slug = github_slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else "%s-%d" % (slug, n))

    last_number = None
    for number, line in prose_lines(text):
        contiguous = last_number is not None and number == last_number + 1
        last_number = number
        m = ATX.match(line)
        if m:
            add(m.group(2) or "")
            previous = None
        elif SETEXT.match(line) and contiguous and previous is not None and previous.strip() \
                and not LIST_ITEM.match(previous) and not previous.lstrip().startswith("|") \
                and not (SETEXT.match(previous) or ATX.match(previous)):
            add(previous)
            previous = None
        else:
            previous = line
        for a in EXPLICIT_ANCHOR.findall(line):
            anchors.add(a)
    return anchors


def links_of(text):
    """(line number, target) of every link, image and reference definition outside code."""
    for number, line in prose_lines(text):
        prose = strip_code_spans(line)
        m = REFERENCE_DEF.match(prose)
        if m:
            yield number, m.group(2)
            continue
        for m in INLINE_LINK.finditer(prose):
            yield number, m.group(1)


def markdown_files(root):
    found = {os.path.join(root, "README.md"), os.path.join(root, "deploy", "README.md")}
    found.update(glob.glob(os.path.join(root, "docs", "*.md")))
    try:
        out = subprocess.run(["git", "-C", root, "ls-files", "-z", "--", "*.md"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True,
                             timeout=60).stdout.decode("utf-8", "replace")
        found.update(os.path.join(root, p) for p in out.split("\0") if p)
    except (OSError, subprocess.SubprocessError):
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not (d.startswith(".") or d == "node_modules"
                                               or d == "build" or d.startswith("build-"))]
            found.update(os.path.join(folder, f) for f in files if f.endswith(".md"))
    return sorted(f for f in found if os.path.isfile(f))


def check(root):
    """(problems, files checked, links checked, links skipped)."""
    root = os.path.abspath(root)
    problems, checked, skipped = [], 0, 0
    anchor_cache = {}

    def anchors(path):
        if path not in anchor_cache:
            with open(path, encoding="utf-8", errors="replace") as f:
                anchor_cache[path] = anchors_of(f.read())
        return anchor_cache[path]

    files = markdown_files(root)
    for path in files:
        rel = os.path.relpath(path, root)
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for number, raw in links_of(text):
            target = raw[1:-1] if raw.startswith("<") and raw.endswith(">") else raw
            if SCHEME.match(target) or target.startswith("//"):
                skipped += 1
                continue
            checked += 1
            where = "%s:%d: %s" % (rel, number, raw)
            file_part, _, anchor = target.partition("#")
            file_part = urllib.parse.unquote(file_part.split("?", 1)[0])
            if not file_part:
                if not anchor:
                    problems.append("%s: empty link" % where)
                    continue
                dest = path
            elif file_part.startswith("/"):
                dest = os.path.normpath(os.path.join(root, file_part.lstrip("/")))
            else:
                dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part))
            if not os.path.exists(dest):
                problems.append("%s: no such file %s" % (where, os.path.relpath(dest, root)))
                continue
            if not anchor or not dest.lower().endswith(MARKDOWN) or not os.path.isfile(dest):
                continue  # line anchors of source files (#L10) and folders are not checked
            wanted = urllib.parse.unquote(anchor)
            have = anchors(dest)
            if wanted not in have and wanted.lower() not in have:
                problems.append("%s: no heading or anchor #%s in %s"
                                % (where, wanted, os.path.relpath(dest, root)))
    return problems, len(files), checked, skipped


def self_test():
    # One good link of each kind, a link to a missing file, and a link to an anchor that exists
    # only as a heading inside a fenced block (so: missing). Links in code must be ignored.
    files = {
        "README.md": (
            "# Title\n\n"
            "See [the guide](docs/guide.md#real-heading), [the top](#title),\n"
            "[a duplicate](docs/guide.md#real-heading-1), [explicit](docs/guide.md#explicit)\n"
            "and ![a picture](docs/pic.png \"title\").\n"
            "Not a file: [gone](docs/missing.md).\n\n"
            "[ref]: docs/guide.md#fenced-heading\n\n"
            "```\n[inside a fence](nowhere.md)\n# Fenced heading\n```\n\n"
            "    [indented code](nowhere.md)\n\n"
            "Inline code is not a link: `[x](nowhere.md)`; nor is [this](https://example.com/x).\n"
        ),
        "docs/guide.md": (
            "# Real heading\n\n## Real heading\n\n<a name=\"explicit\"></a>\n"
            "Back to [the README](../README.md#title).\n\n"
            "```sh\n# Fenced heading\n```\n"
        ),
        "docs/pic.png": "",
    }
    with tempfile.TemporaryDirectory(prefix="links-self-") as tmp:
        for name, content in files.items():
            os.makedirs(os.path.dirname(os.path.join(tmp, name)), exist_ok=True)
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                f.write(content)
        problems, nfiles, checked, skipped = check(tmp)
    for p in problems:
        print("self-test found: %s" % p)
    expected = [("docs/missing.md", "no such file"), ("#fenced-heading", "no heading")]
    ok = len(problems) == 2 and all(any(t in p and r in p for p in problems) for t, r in expected)
    if not ok:
        print("self-test FAIL: expected exactly 2 problems (a missing file, a missing anchor), "
              "found %d" % len(problems))
        return 1
    print("self-test ok: 2 broken links of %d found in %d files (%d external skipped)"
          % (checked, nfiles, skipped))
    return 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    if len(argv) != 2 or argv[1].startswith("-"):
        print("usage: links_test.py REPO_ROOT | --self-test", file=sys.stderr)
        return 2
    if not os.path.isdir(argv[1]):
        print("links_test: %s is not a folder" % argv[1])
        return 1
    problems, nfiles, checked, skipped = check(argv[1])
    for p in problems:
        print(p)
    if problems:
        print("%d broken link(s) of %d in %d markdown files" % (len(problems), checked, nfiles))
        return 1
    print("%d relative links in %d markdown files all resolve (%d external skipped)"
          % (checked, nfiles, skipped))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
