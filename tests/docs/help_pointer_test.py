#!/usr/bin/python3
"""help_pointer_test.py: every binary's --help ends with a pointer to a docs page that exists.

  help_pointer_test.py <build dir> <repo root>

Runs `--help` of wsbridge, `wsbridge keygen`, `wsbridge check`, wsbridge-tail, -send, -replay and
-upstream; the last non-empty line must be "Documentation: docs/<page> ..." naming a file in
docs/. Exit 1 with one line per binary that does not.
"""
import os
import re
import subprocess
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    build, root = sys.argv[1:]
    commands = [["bridge/wsbridge"], ["bridge/wsbridge", "keygen"], ["bridge/wsbridge", "check"],
                ["tools/wsbridge-tail"], ["tools/wsbridge-send"], ["tools/wsbridge-replay"],
                ["tools/wsbridge-upstream"]]
    problems = []
    for cmd in commands:
        argv = [os.path.join(build, cmd[0])] + cmd[1:] + ["--help"]
        name = " ".join([os.path.basename(cmd[0])] + cmd[1:])
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        lines = [l for l in (out.stdout + out.stderr).splitlines() if l.strip()]
        last = lines[-1] if lines else ""
        m = re.match(r"Documentation: docs/([a-z_]+\.md)\b", last)
        if out.returncode != 0:
            problems.append(f"{name} --help: exit {out.returncode}")
        elif not m:
            problems.append(f"{name} --help: last line is {last!r}, not a docs pointer")
        elif not os.path.isfile(os.path.join(root, "docs", m.group(1))):
            problems.append(f"{name} --help: points at docs/{m.group(1)}, which does not exist")
    for p in problems:
        print("help_pointer_test: " + p)
    if problems:
        sys.exit(1)
    print(f"help_pointer_test: {len(commands)} --help texts end with a docs page that exists")


if __name__ == "__main__":
    main()
