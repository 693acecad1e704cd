"""The ipmitool command lines Ironic ran, per e2e step: ``extract-commands [LOG]``.

``bin/ipmitool`` (first on Ironic's PATH in the lab) appends one line per
call to the lab's ipmitool-argv.log::

    2026-12-02T14:00:00.000Z pid=123 rc=0 dur=0.104s ipmitool -I lanplus ...

and the e2e writes ``### e2e STEP node=UUID HH:MM:SS`` before each step.
This prints, for each step, the command lines in order, with the password
file Ironic made shown as PWFILE and runs of the same line folded into one
with ``(xN, rc=R[/R2])``.  ironic-ipmitool-commands.txt was made from it.
"""
import re
import sys

from ovbmc_ironic_lab import settings

CALL = re.compile(r"^\S+ pid=\d+ rc=(\d+) dur=[\d.]+s (ipmitool .*)$")
# Ironic writes the password to a temporary file and passes -f FILE
PWFILE = re.compile(r"-f \S*/tmp[A-Za-z0-9_]*")


def groups(lines):
    """(step, [(command, count, [exit codes])]) in log order."""
    step, runs = None, []
    for line in lines:
        line = line.rstrip("\n")
        if line.startswith("### e2e "):
            if step is not None or runs:
                yield step, runs
            step, runs = line.split()[2], []
            continue
        m = CALL.match(line)
        if not m:
            continue
        rc, cmd = m.group(1), PWFILE.sub("-f PWFILE", m.group(2))
        if runs and runs[-1][0] == cmd:
            runs[-1][1] += 1
            if rc not in runs[-1][2]:
                runs[-1][2].append(rc)
        else:
            runs.append([cmd, 1, [rc]])
    if step is not None or runs:
        yield step, runs


def main(argv):
    path = argv[1] if len(argv) > 1 else settings.load().ipmitool_log
    with open(path, errors="replace") as f:
        for step, runs in groups(f):
            if step is not None:
                print("\n[%s]" % step)
            for cmd, count, rcs in runs:
                times = "x%d, " % count if count > 1 else ""
                print("    %s   (%src=%s)" % (cmd, times, "/".join(rcs)))


if __name__ == "__main__":
    main(sys.argv)
