#!/usr/bin/env python3
"""Print the scalars of TensorBoard event files as CSV, with only the
standard library (no tensorflow, no tensorboard).

  scripts/tb_scalars.py LOGDIR [--tag TAG]

Reads every events.out.tfevents.* file under LOGDIR (recursively), checks
each record's CRC32C, decodes Event.summary.value.simple_value and prints
  run,tag,step,wall_time,value
sorted by run, tag and step (run: the file's directory relative to LOGDIR,
"." for LOGDIR itself). scripts/plot.sh uses it for loss-against-time charts.
"""
import argparse
import os
import struct
import sys


def _crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_TABLE = _crc_table()


def masked_crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    c ^= 0xFFFFFFFF
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def records(path):
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos + 12 <= len(data):
        header = data[pos:pos + 8]
        (n,) = struct.unpack("<Q", header)
        (crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if crc != masked_crc32c(header):
            raise ValueError(f"{path}: bad length CRC at offset {pos}")
        body = data[pos + 12:pos + 12 + n]
        if len(body) < n or pos + 16 + n > len(data):
            return  # a record still being written
        (crc,) = struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])
        if crc != masked_crc32c(body):
            raise ValueError(f"{path}: bad data CRC at offset {pos}")
        yield body
        pos += 16 + n


def fields(buf):
    """(field number, wire type, value) of a protobuf message."""
    pos = 0

    def varint():
        nonlocal pos
        v = shift = 0
        while True:
            b = buf[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v

    while pos < len(buf):
        key = varint()
        num, wt = key >> 3, key & 7
        if wt == 0:
            yield num, wt, varint()
        elif wt == 1:
            yield num, wt, buf[pos:pos + 8]
            pos += 8
        elif wt == 2:
            n = varint()
            yield num, wt, buf[pos:pos + n]
            pos += n
        elif wt == 5:
            yield num, wt, buf[pos:pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wt}")


def scalars(body):
    """(step, wall_time, [(tag, value)]) of one Event."""
    step, wall, values = 0, 0.0, []
    for num, wt, v in fields(body):
        if num == 1 and wt == 1:
            wall = struct.unpack("<d", v)[0]
        elif num == 2 and wt == 0:
            step = v - (1 << 64) if v >= 1 << 63 else v
        elif num == 5 and wt == 2:                    # Summary
            for vn, vwt, val in fields(v):
                if vn != 1 or vwt != 2:
                    continue
                tag, x = None, None
                for fn, fwt, fv in fields(val):       # Summary.Value
                    if fn == 1 and fwt == 2:
                        tag = fv.decode("utf-8", "replace")
                    elif fn == 2 and fwt == 5:
                        x = struct.unpack("<f", fv)[0]
                if tag is not None and x is not None:
                    values.append((tag, x))
    return step, wall, values


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logdir")
    ap.add_argument("--tag", help="only this tag")
    a = ap.parse_args(argv)
    if not os.path.isdir(a.logdir):
        sys.exit(f"tb_scalars: '{a.logdir}' is not a directory")
    rows = []
    for root, _, files in os.walk(a.logdir):
        for name in sorted(files):
            if "tfevents" not in name:
                continue
            run = os.path.relpath(root, a.logdir)
            try:
                for body in records(os.path.join(root, name)):
                    step, wall, values = scalars(body)
                    rows += [(run, tag, step, wall, x) for tag, x in values if a.tag in (None, tag)]
            except (ValueError, IndexError, struct.error) as e:
                sys.exit(f"tb_scalars: {os.path.join(root, name)}: {e}")
    rows.sort(key=lambda r: (r[0], r[1], r[2], r[3]))
    out = sys.stdout
    out.write("run,tag,step,wall_time,value\n")
    for r in rows:
        out.write(f"{r[0]},{r[1]},{r[2]},{r[3]:.6f},{r[4]!r}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
