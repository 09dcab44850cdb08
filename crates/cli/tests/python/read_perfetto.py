#!/usr/bin/env python3
"""Decodes a Perfetto trace with Perfetto's own schema (the `perfetto`
package's compiled protos) and prints what a viewer would show, as JSON:
the tracks, and every track event with its absolute time, track, name and
arguments, interned strings and incremental timestamps resolved as
Perfetto's documentation says.

Usage: read_perfetto.py TRACE

Fails (exit status 1) on anything the schema does not know: a field number
it lacks is an "unknown field" here, and a wrong wire type a decode error.
"""

import json
import sys

from google.protobuf import unknown_fields
from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace

BOOTTIME = 6
INCREMENTAL_STATE_CLEARED = 1


def check_known(message, where):
    """Every field of `message` and its sub-messages is in the schema."""
    unknown = unknown_fields.UnknownFieldSet(message)
    if len(unknown):
        numbers = sorted(field.field_number for field in unknown)
        sys.exit(f"{where}: fields {numbers} are not in Perfetto's schema")
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        values = value if field.is_repeated else [value]
        for item in values:
            check_known(item, f"{where}.{field.name}")


def fresh_state():
    return {
        "defaults": None,
        "event_names": {},
        "annotation_names": {},
        "strings": {},
        # clock id -> [last value, incremental?, offset to BOOTTIME]
        "clocks": {},
    }


def main():
    trace = Trace()
    with open(sys.argv[1], "rb") as f:
        trace.ParseFromString(f.read())
    tracks = {}
    events = []
    states = {}
    for index, packet in enumerate(trace.packet):
        check_known(packet, f"packet {index}")
        seq = packet.trusted_packet_sequence_id
        if packet.sequence_flags & INCREMENTAL_STATE_CLEARED or seq not in states:
            states[seq] = fresh_state()
        state = states[seq]
        if packet.HasField("trace_packet_defaults"):
            state["defaults"] = packet.trace_packet_defaults
        if packet.HasField("interned_data"):
            data = packet.interned_data
            for entry in data.event_names:
                state["event_names"][entry.iid] = entry.name
            for entry in data.debug_annotation_names:
                state["annotation_names"][entry.iid] = entry.name
            for entry in data.debug_annotation_string_values:
                state["strings"][entry.iid] = entry.str.decode()
        if packet.HasField("clock_snapshot"):
            clocks = {c.clock_id: c for c in packet.clock_snapshot.clocks}
            boot = clocks[BOOTTIME].timestamp
            for clock_id, clock in clocks.items():
                if clock_id >= 64:
                    state["clocks"][clock_id] = [
                        clock.timestamp,
                        clock.is_incremental,
                        boot - clock.timestamp,
                    ]
        if packet.HasField("track_descriptor"):
            d = packet.track_descriptor
            track = {"uuid": d.uuid, "name": d.name}
            if d.HasField("process"):
                track.update(kind="process", pid=d.process.pid, name=d.process.process_name)
            elif d.HasField("thread"):
                track.update(
                    kind="thread",
                    pid=d.thread.pid,
                    tid=d.thread.tid,
                    name=d.thread.thread_name,
                    parent=d.parent_uuid,
                )
            elif d.HasField("counter"):
                track["kind"] = "counter"
            else:
                track["kind"] = "global"
            tracks[d.uuid] = track
        if not packet.HasField("track_event"):
            continue
        event = packet.track_event
        defaults = state["defaults"]
        clock_id = BOOTTIME
        if packet.HasField("timestamp_clock_id"):
            clock_id = packet.timestamp_clock_id
        elif defaults is not None and defaults.HasField("timestamp_clock_id"):
            clock_id = defaults.timestamp_clock_id
        if clock_id == BOOTTIME:
            time = packet.timestamp
        else:
            clock = state["clocks"][clock_id]
            value = clock[0] + packet.timestamp if clock[1] else packet.timestamp
            clock[0] = value
            time = value + clock[2]
        if event.HasField("track_uuid"):
            track = event.track_uuid
        else:
            track = defaults.track_event_defaults.track_uuid
        if event.HasField("name_iid"):
            name = state["event_names"][event.name_iid]
        else:
            name = event.name
        args = {}
        for a in event.debug_annotations:
            key = a.name if a.HasField("name") else state["annotation_names"][a.name_iid]
            if a.HasField("uint_value"):
                args[key] = a.uint_value
            elif a.HasField("string_value_iid"):
                args[key] = state["strings"][a.string_value_iid]
            else:
                args[key] = a.string_value
        out = {
            "seq": seq,
            "type": event.Type.Name(event.type),
            "time": time,
            "track": track,
            "name": name,
            "args": args,
        }
        if event.HasField("counter_value"):
            out["counter"] = event.counter_value
        events.append(out)
    json.dump({"tracks": list(tracks.values()), "events": events}, sys.stdout)


main()
