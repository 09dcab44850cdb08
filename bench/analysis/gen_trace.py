#!/usr/bin/env python3
"""Writes a synthetic text trace of a driver that polls a lot, for the
peak-memory measurements of the analysis commands (docs/BENCHMARKS.md,
"Analysis commands").

Usage: gen_trace.py EVENTS OUT

Four threads of one process, in random turns: writes to 512 registers of
map 1 with random values (half the turns); a status register polled 1 to 200
times until bit 31 (a quarter); an index/data pair polled 1 to 50 times
(a tenth); reads of 64 registers of map 2; a MARK now and then. Seeded, so
the same EVENTS gives the same file.
"""

import random
import sys


def main():
    events_wanted = int(sys.argv[1])
    out = open(sys.argv[2], "w", buffering=1 << 20)
    rnd = random.Random(42)
    write = out.write
    write("VERSION 20070824\n")
    write("MAP 0.000001 1 0xfebf0000 0x7f0000000000 0x20000 0x4000 100 seq=0 proc=100"
          " path=/sys/bus/pci/devices/0000:00:03.0/resource0\n")
    write("MAP 0.000002 2 0xfec00000 0x7f0000100000 0x1000 0x4004 100 seq=1 proc=100"
          " path=/dev/uio0\n")
    state = {"seq": 2, "t": 10_000}

    def stamp():
        t = state["t"]
        return f"{t // 1_000_000_000}.{(t // 1000) % 1_000_000:06d}"

    def access(d, map_id, phys, value, pc, tid):
        state["t"] += rnd.randint(200, 3000)
        write(f"{d} 4 {stamp()} {map_id} {phys:#x} {value:#x} {pc:#x} {tid}"
              f" seq={state['seq']} proc=100\n")
        state["seq"] += 1

    events = 0
    while events < events_wanted:
        tid = rnd.choice([100, 101, 102, 103])
        r = rnd.random()
        if r < 0.5:
            register = 0xfebf0000 + 4 * rnd.randrange(512)
            access("W", 1, register, rnd.getrandbits(32), 0x4000 + rnd.randrange(64) * 4, tid)
            events += 1
        elif r < 0.75:
            polls = rnd.randint(1, 200)
            for _ in range(polls):
                access("R", 1, 0xfebf0008, 0, 0x4100, tid)
            access("R", 1, 0xfebf0008, 0x80000000, 0x4100, tid)
            events += polls + 1
        elif r < 0.85:
            polls = rnd.randint(1, 50)
            for i in range(polls + 1):
                access("W", 2, 0xfec00010, 5, 0x4200, tid)
                access("R", 2, 0xfec00014, 7 if i == polls else 0, 0x4204, tid)
            events += 2 * (polls + 1)
        elif r < 0.999:
            access("R", 2, 0xfec00000 + 4 * rnd.randrange(64), rnd.getrandbits(32), 0x4300, tid)
            events += 1
        else:
            state["t"] += 1000
            write(f"MARK {stamp()} phase {state['seq']}\tseq={state['seq']} proc=100\n")
            state["seq"] += 1
            events += 1
    out.close()


if __name__ == "__main__":
    main()
