#!/usr/bin/env python3
"""Write seed inputs for the `commands`, `setup` and `endpoint` targets from the captured
sessions in ../shared/vectors (see ipmi-proto/src/fuzzing.rs for the input formats).

    python3 fuzz/make-seeds.py [VECTORS_DIR]

Files are named by their SHA-1, as libFuzzer names corpus entries, so re-running is harmless.
"""
import glob
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "../../shared/vectors")


def write(target, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)


def setup_payload(hexstr):
    """The RMCP+ payload of an unauthenticated IPMI 2.0 datagram (offset 16)."""
    b = bytes.fromhex(hexstr)
    return b[16:] if len(b) > 16 and b[4] == 0x06 else None


for path in sorted(glob.glob(os.path.join(VECTORS, "*.json"))):
    v = json.load(open(path))
    if not isinstance(v, dict) or "datagrams" not in v:
        continue
    cmds, seq = bytearray(), bytearray()
    for x in v["datagrams"]:
        if x["dir"] != "c2s":
            continue
        raw = bytes.fromhex(x["hex"])
        p = x.get("plain") or {}
        label = x["label"]
        if "cmd" in p and "netfn" in p:
            data = bytes.fromhex(p.get("data", ""))
            cmds += bytes([0x04, p["netfn"], p["cmd"], len(data)]) + data
            if "sid=00000000" in label:
                seq += bytes([1, len(raw)]) + raw
            else:
                rec = bytes([0xFF, p["netfn"], p["cmd"]]) + data
                seq += bytes([1, len(rec)]) + rec
        elif "OpenSessionReq" in label:
            pl = setup_payload(x["hex"])
            write("setup", bytes([0]) + pl)
            seq += bytes([1, len(raw)]) + raw
        elif "RAKP1" in label:
            pl = setup_payload(x["hex"])
            write("setup", bytes([1]) + pl)
            rec = bytes([0xFD, 0x12]) + pl
            seq += bytes([0, len(rec)]) + rec
        elif "RAKP3" in label:
            pl = setup_payload(x["hex"])
            write("setup", bytes([2]) + pl)
            write("setup", bytes([3]) + pl)
            seq += bytes([0, 2, 0xFC, pl[0]])
        elif len(raw) < 256:
            seq += bytes([1, len(raw)]) + raw
    if cmds:
        write("commands", bytes(cmds))
    if seq:
        write("endpoint", bytes(seq[:4096]))

# In-session specials: a sealed garbage plaintext, a replay far behind, a deferred power-on
# followed by its retry.
write("endpoint", bytes([0, 5, 0xFE, 1, 0x20, 0x18, 0xC8, 0, 5, 0xFE, 0xE0, 1, 2, 3]))
write("endpoint", bytes([0, 4, 0xFF, 0x40, 0x02, 0x01, 0, 4, 0xFF, 0x40, 0x02, 0x01, 20, 3, 0xFF, 0x00, 0x01]))
