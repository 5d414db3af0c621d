"""Pack and unpack the flattened stream payloads of the fragmenter chain through the layouts
of :mod:`hotline_hw.fragmenter.layouts` (no hand-written bit offsets)."""

from amaranth.hdl import Shape

__all__ = ["LaneCodec", "StructCodec"]


class StructCodec:
    """Integer <-> dict for one ``StructLayout``."""

    def __init__(self, layout):
        self.size = layout.size
        self.fields = {name: (f.offset, Shape.cast(f.shape).width) for name, f in layout}

    def pack(self, values):
        out = 0
        for name, value in values.items():
            offset, width = self.fields[name]
            out |= (int(value) & ((1 << width) - 1)) << offset
        return out

    def unpack(self, value):
        return {name: (value >> offset) & ((1 << width) - 1)
                for name, (offset, width) in self.fields.items()}


class LaneCodec:
    """Integer <-> list of dicts for ``lanes`` copies of a lane ``StructLayout``."""

    def __init__(self, lane_layout, lanes):
        self.lane = StructCodec(lane_layout)
        self.lanes = lanes

    def pack(self, lanes):
        return sum(self.lane.pack(v) << (i * self.lane.size) for i, v in enumerate(lanes))

    def unpack(self, value):
        mask = (1 << self.lane.size) - 1
        return [self.lane.unpack((value >> (i * self.lane.size)) & mask)
                for i in range(self.lanes)]

    def valid_values(self, value, field):
        """``field`` of the valid lanes, in lane order."""
        return [lane[field] for lane in self.unpack(value) if lane["valid"]]
