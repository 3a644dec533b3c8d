#!/usr/bin/python3
"""config_doc_test.py: docs/configuration.md documents every configuration key, with its default.

The truth is the daemon itself: `wsbridge --print-config`, run in a clean environment (only
PATH, a temporary working directory), prints every key the parser accepts with its default
(`[section]` lines, then `name = value  # source`). The page's one table whose header starts
with `| key |` must have exactly one row per key, its first cell the full dotted key in
backticks, and its `default` cell the printed value in backticks (compared with whitespace
normalised). The `flag` cell, when it names a flag, must be the short flag `--help` lists for
that key, and every key with a short flag must show it.

Usage:
  /usr/bin/python3 tests/docs/config_doc_test.py WSBRIDGE_BINARY DOCS/configuration.md
  /usr/bin/python3 tests/docs/config_doc_test.py --self-test WSBRIDGE_BINARY DOCS/configuration.md
Prints one line per problem (naming the key) and exits 1, else prints a one-line summary.
--self-test checks the checker: on temporary copies of the page it removes a row, adds a row
for `upstream.bogus` and changes a documented default, and asserts that each is caught.
ctest runs both (docs_config_selftest, docs_config_test).
"""

import os
import re
import subprocess
import sys
import tempfile

from links_test import prose_lines  # the lines outside code blocks, as the link check reads them

SOURCES = {"default", "file", "env", "flag"}


def clean_env():
    """Only PATH (and the sanitizers' options, which configure no key): no WSBRIDGE_* variable."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for name, value in os.environ.items():
        if name.endswith("SAN_OPTIONS"):
            env[name] = value
    return env


def run_binary(binary, *args):
    with tempfile.TemporaryDirectory(prefix="config-doc-") as cwd:
        proc = subprocess.run([binary, *args], cwd=cwd, env=clean_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=60, check=False)
    out, err = proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise RuntimeError("%s %s exited %d: %s" % (binary, " ".join(args), proc.returncode,
                                                     err.strip() or out.strip()))
    return out


def normalise(text):
    return " ".join(text.split())


def parse_print_config(text):
    """`--print-config` output -> {"section.key": "value text"}, in order."""
    keys = {}
    section = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = re.fullmatch(r"\[([A-Za-z0-9_.]+)\]", line.strip())
        if m:
            section = m.group(1)
            continue
        # The value may hold " # " inside a string; the source comment is the last "  # ".
        body, sep, source = line.rpartition("  # ")
        m = re.fullmatch(r"([A-Za-z0-9_]+) = (.*)", body)
        if not sep or not m or source.strip() not in SOURCES or section is None:
            raise RuntimeError("--print-config line %d not understood: %r" % (number, line))
        keys[section + "." + m.group(1)] = m.group(2)
    if not keys:
        raise RuntimeError("--print-config printed no keys")
    return keys


def parse_help_flags(text):
    """`--help` output -> {"section.key": "--flag"} for the short flags ("--db TEXT  sets ...")."""
    flags = {}
    for m in re.finditer(r"^\s*(--[a-z-]+)\s+\S+\s+sets ([a-z_.]+)\s*$", text, re.M):
        flags[m.group(2)] = m.group(1)
    return flags


def split_row(line):
    """A markdown table row -> its cells (a `\\|` stays inside its cell, unescaped)."""
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    cells = re.split(r"(?<!\\)\|", body)
    return [c.strip().replace("\\|", "|") for c in cells]


def backticked(cell):
    """The text inside a cell that is one code span (`x` or ``x``), else None."""
    m = re.fullmatch(r"(`+)\s?(.*?)\s?\1", cell.strip())
    return m.group(2) if m else None


def parse_doc(text):
    """configuration.md -> ({key: (line, flag cell, default text or None)}, problems, columns)."""
    problems = []
    lines = text.splitlines()
    headers = [n for n, line in prose_lines(text) if re.match(r"^\|\s*key\s*\|", line)]
    if len(headers) != 1:
        where = ", ".join("line %d" % n for n in headers) or "none"
        return {}, ["configuration.md: expected exactly one table whose header starts with "
                    "'| key |', found %d (%s)" % (len(headers), where)], []
    start = headers[0]
    columns = [c.lower() for c in split_row(lines[start - 1])]
    for name in ("key", "flag", "default", "meaning"):
        if name not in columns:
            problems.append("configuration.md:%d: the key table has no '%s' column" % (start, name))
    if problems:
        return {}, problems, columns
    i_key, i_flag, i_default = columns.index("key"), columns.index("flag"), columns.index("default")
    rows = {}
    for number in range(start + 2, len(lines) + 1):  # past the header and its --- line
        line = lines[number - 1]
        if not line.strip().startswith("|"):
            break
        cells = split_row(line)
        key = backticked(cells[i_key]) if cells else None
        if key is None or not re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)+", key):
            problems.append("configuration.md:%d: the first cell is not one backticked dotted key: "
                            "%s" % (number, cells[0] if cells else line))
            continue
        if len(cells) != len(columns):
            problems.append("%s: configuration.md:%d: %d cells, the table has %d columns"
                            % (key, number, len(cells), len(columns)))
            continue
        if key in rows:
            problems.append("%s: configuration.md:%d: documented twice (also line %d)"
                            % (key, number, rows[key][0]))
            continue
        rows[key] = (number, cells[i_flag], backticked(cells[i_default]))
    return rows, problems, columns


def check(printed, flags, doc_text):
    """Every problem, one line each, naming the key."""
    rows, problems, columns = parse_doc(doc_text)
    if not columns:  # no usable table: that one line says it all
        return problems
    for key, value in printed.items():
        if key not in rows:
            problems.append("%s: accepted by wsbridge (default %s) but missing from "
                            "configuration.md" % (key, value))
    for key, (number, flag_cell, default) in rows.items():
        if key not in printed:
            problems.append("%s: configuration.md:%d documents a key wsbridge does not accept"
                            % (key, number))
            continue
        if default is None:
            problems.append("%s: configuration.md:%d: the default is not in backticks; "
                            "--print-config prints %s" % (key, number, printed[key]))
        elif normalise(default) != normalise(printed[key]):
            problems.append("%s: configuration.md:%d documents default `%s`, --print-config "
                            "prints `%s`" % (key, number, default, printed[key]))
        flag = backticked(flag_cell) if flag_cell else None
        if flag_cell and flag is None:
            flag = flag_cell.strip() if flag_cell.strip() not in ("-", "—") else None
        if flag != flags.get(key):
            problems.append("%s: configuration.md:%d: flag %s, --help says %s"
                            % (key, number, flag or "(none)", flags.get(key) or "(none)"))
    return problems


def self_test(printed, flags, doc_text):
    """Each mutation of the page must add a problem naming the mutated key."""
    rows, _, columns = parse_doc(doc_text)
    keys = [k for k in printed if k in rows]
    if len(keys) < 2:
        print("self-test: the page documents fewer than two keys; nothing to mutate")
        return 1
    baseline = set(check(printed, flags, doc_text))
    lines = doc_text.split("\n")
    removed, changed = keys[0], keys[1]

    def without_row(text):
        n = rows[removed][0]
        return "\n".join(lines[:n - 1] + lines[n:])

    def with_bogus_row(text):
        n = rows[removed][0]
        bogus = "| `upstream.bogus` | | `42` | not a key |"
        return "\n".join(lines[:n] + [bogus] + lines[n:])

    def with_changed_default(text):
        n = rows[changed][0]
        cells = split_row(lines[n - 1])
        cells[columns.index("default")] = "`\"not the default\"`"
        row = "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
        return "\n".join(lines[:n - 1] + [row] + lines[n:])

    failed = 0
    with tempfile.TemporaryDirectory(prefix="config-doc-self-") as tmp:
        for name, mutate, key in (("row removed", without_row, removed),
                                  ("row added", with_bogus_row, "upstream.bogus"),
                                  ("default changed", with_changed_default, changed)):
            copy = os.path.join(tmp, "configuration.md")
            with open(copy, "w", encoding="utf-8") as f:
                f.write(mutate(doc_text))
            with open(copy, encoding="utf-8") as f:
                new = [p for p in check(printed, flags, f.read()) if p not in baseline]
            caught = [p for p in new if p.startswith(key + ":")]
            if caught:
                print("self-test ok: %s (%s): %s" % (name, key, caught[0]))
            else:
                print("self-test FAIL: %s (%s) was not caught; new problems: %s"
                      % (name, key, new or "none"))
                failed += 1
    return 1 if failed else 0


def main(argv):
    args = argv[1:]
    selftest = "--self-test" in args
    args = [a for a in args if a != "--self-test"]
    if len(args) != 2 or any(a.startswith("-") for a in args):
        print("usage: config_doc_test.py [--self-test] WSBRIDGE_BINARY CONFIGURATION_MD",
              file=sys.stderr)
        return 2
    binary, doc = os.path.abspath(args[0]), args[1]
    try:
        printed = parse_print_config(run_binary(binary, "--print-config"))
        flags = parse_help_flags(run_binary(binary, "--help"))
        with open(doc, encoding="utf-8") as f:
            doc_text = f.read()
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        print("config_doc_test: %s" % e)
        return 1
    if selftest:
        return self_test(printed, flags, doc_text)
    problems = check(printed, flags, doc_text)
    for p in problems:
        print(p)
    if problems:
        print("%d problem(s) in %s" % (len(problems), doc))
        return 1
    print("%d keys documented with their defaults (%d short flags) in %s"
          % (len(printed), len(flags), doc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
