"""What the bench scripts (scripts/bench-*) share: logging, medians, /proc readings, the lab.

Imported by the scripts from their own directory; nothing here starts or times anything.
"""

import os
import socket
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# cargo's own override of the target directory, as cargo itself reads it.
REL = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
LAB = Path(os.environ.get("OVBMC_LAB", ROOT / "tests" / "lab"))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def med(rs, key):
    """The median of `key` over the runs that have it, or None."""
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def spread(rs, key):
    """' ±N%': half the range of `key` over the runs, relative to the median ('' for one run)."""
    vals = [r[key] for r in rs if r.get(key) is not None]
    if len(vals) < 2 or not statistics.median(vals):
        return ""
    return f" ±{100 * (max(vals) - min(vals)) / 2 / statistics.median(vals):.0f}%"


def cpu_seconds(pid):
    """User + system CPU of `pid` so far (proc(5), /proc/PID/stat fields 14 and 15, in ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces: split after its closing parenthesis.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kib(pid):
    """(VmRSS, VmHWM) of `pid` in KiB (proc(5), /proc/PID/status)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out.get("VmRSS"), out.get("VmHWM")


def lab_env(kind="openstack"):
    """The lab's settings (tests/lab/env KIND), or None without a lab."""
    try:
        r = subprocess.run([str(LAB / "env"), kind], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def answers(port, host="127.0.0.1"):
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def free_port(kind=socket.SOCK_STREAM, host="127.0.0.1"):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
