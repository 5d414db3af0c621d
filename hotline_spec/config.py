"""The elaboration parameters of the Hotline lookup path: the one source of truth.

The golden model (``verif.golden``), the Amaranth RTL (``hotline_hw``), the driver and the
docs all read their parameters from :class:`EALConfig`. ``docs/spec.md`` explains each field;
``python -m hotline_hw`` prints the derived widths of the named configurations.
"""

from dataclasses import dataclass, asdict
import math

__all__ = ["EALConfig", "DeviceConfig", "DEFAULT_DEVICE", "SMALL_DEVICE", "DEVICE_CONFIGS",
           "FragmenterConfig", "DEFAULT_FRAGMENTER", "FRAGMENTER_CONFIGS", "DEDUP_MULTIPLIER",
           "fragmenter_for_working_set", "DEDUP_MARGIN_SIGMAS",
           "FEISTEL_ROUND_KEYS", "FEISTEL_MULTIPLIERS", "CONFIGS",
           "DEFAULT_CONFIG", "ASIC_CONFIG", "RRPV_INSERT", "RRPV_MAX", "POLICIES",
           "SKETCH_ROWS", "SKETCH_MULTIPLIER"]

# Feistel round constants (32-bit). Round i uses index i. Multipliers are odd so that the
# round function's product is a bijection of its low bits; the hash itself is a bijection
# whatever the round function, because it is a Feistel network.
FEISTEL_ROUND_KEYS = (0x9E3779B9, 0x7F4A7C15, 0xF39CC060, 0x5CEDC834,
                      0x2545F491, 0x4F6CDD1D, 0x62A9D9ED, 0xD1B54A33)
FEISTEL_MULTIPLIERS = (0x85EBCA6B, 0xC2B2AE35, 0x27D4EB2F, 0x165667B1,
                       0x9E3779B1, 0xD3A2646D, 0xFD7046C5, 0xB55A4F09)

# SRRIP with 2-bit re-reference prediction values (RRPV): 0 = near re-reference,
# 3 = distant (the eviction candidate). New entries are inserted at RRPV_INSERT.
RRPV_INSERT = 2
RRPV_MAX = 3

# Replacement policies of the tag store (docs/spec.md section 4): "srrip" is the paper's;
# "lfu" keeps per-entry frequency counters and admits a new key only when a small per-set
# count-min sketch says it has been seen more often than the entry it would evict.
POLICIES = ("srrip", "lfu")
# The lfu sketch has two rows; row 0 is indexed by the low tag bits, row 1 by a
# multiplicative hash of the low 32 tag bits (so the two rows collide independently).
SKETCH_ROWS = 2
SKETCH_MULTIPLIER = 0x9E3779B1


def _is_pow2(n):
    return isinstance(n, int) and n > 0 and (n & (n - 1)) == 0


@dataclass(frozen=True)
class EALConfig:
    """Parameters of the Embedding Access Logger (EAL) and its lookup engines.

    Parameters
    ----------
    lanes : int
        Lookups accepted per cycle (the width of the lookup stream), >= 1.
    banks : int
        Independent tag-store banks, a power of two. A bank serves one lookup per cycle.
    sets : int
        Sets per bank, a power of two.
    ways : int
        Ways (entries) per set, >= 1.
    table_bits : int
        Width of the table id field of a key; up to ``2**table_bits`` tables.
    row_bits : int
        Width of the row index field of a key; rows per table < ``2**row_bits``.
    hash_rounds : int
        Feistel rounds, 2..8; the RTL spends two pipeline stages per round.
    dispatch_beats : int
        RTL only, throughput only: beats the bank switch draws lookups from at once (>= 1);
        a bank still empty-handed behind the oldest beat takes its lookup from a younger one.
    queue_depth : int
        RTL only, throughput only: lookups that may wait in each bank's request queue
        (>= 2; the queue has one entry more, for the lookup streaming through its input
        register); a full queue holds back its bank's lookups in the switch (hot keys),
        nothing is dropped.
    beats_in_flight : int
        RTL only, throughput only: beats between the switch and the result release (>= 2);
        covers the banks' latency so that the engine keeps taking a beat per cycle.
    release_beats : int
        RTL only, throughput only: beats the result release answers at once (>= 1); a beat
        whose lanes share a bank waits for that bank while younger beats take their answers.
    popular_max_rrpv : int
        SRRIP only. Default for the run-time threshold: once frozen, a valid entry is popular
        iff its RRPV <= this value (0..3).
    policy : str
        Replacement and admission policy: ``"srrip"`` (the paper's) or ``"lfu"`` (frequency
        counters with sketch admission, docs/spec.md section 4.2).
    count_bits : int
        lfu only: width of the saturating frequency counters of entries and sketch, 2..8.
    sketch_counters : int
        lfu only: counters per sketch row per set, a power of two >= 2 (two rows).
    popular_min_count : int
        lfu only: once frozen, a valid entry is popular iff its count >= this value
        (1..2**count_bits - 1; 1 = every tracked row, so the hot table is used in full).
    """

    lanes: int = 4
    banks: int = 16
    sets: int = 64
    ways: int = 4
    table_bits: int = 5
    row_bits: int = 24
    hash_rounds: int = 4
    dispatch_beats: int = 4
    queue_depth: int = 4
    beats_in_flight: int = 16
    release_beats: int = 4
    popular_max_rrpv: int = 1
    policy: str = "srrip"
    count_bits: int = 4
    sketch_counters: int = 32
    popular_min_count: int = 1

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise ValueError(f"EALConfig: {msg}")
        for name in ("lanes", "banks", "sets", "ways", "table_bits", "row_bits",
                     "hash_rounds", "dispatch_beats", "queue_depth", "beats_in_flight",
                     "release_beats",
                     "popular_max_rrpv", "count_bits",
                     "sketch_counters", "popular_min_count"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"EALConfig: {name} must be an int, not {value!r}")
        need(self.lanes >= 1, f"lanes must be >= 1, not {self.lanes}")
        need(_is_pow2(self.banks), f"banks must be a power of two, not {self.banks}")
        need(_is_pow2(self.sets), f"sets must be a power of two, not {self.sets}")
        need(self.ways >= 1, f"ways must be >= 1, not {self.ways}")
        need(self.table_bits >= 0, f"table_bits must be >= 0, not {self.table_bits}")
        need(self.row_bits >= 1, f"row_bits must be >= 1, not {self.row_bits}")
        need(2 <= self.key_bits <= 64,
             f"key_bits = table_bits + row_bits must be in 2..64, not {self.key_bits}")
        need(2 <= self.hash_rounds <= len(FEISTEL_ROUND_KEYS),
             f"hash_rounds must be in 2..{len(FEISTEL_ROUND_KEYS)}, not {self.hash_rounds}")
        need(self.dispatch_beats >= 1, f"dispatch_beats must be >= 1, not {self.dispatch_beats}")
        need(self.queue_depth >= 2, f"queue_depth must be >= 2, not {self.queue_depth}")
        need(self.beats_in_flight >= 2,
             f"beats_in_flight must be >= 2, not {self.beats_in_flight}")
        need(self.release_beats >= 1, f"release_beats must be >= 1, not {self.release_beats}")
        need(0 <= self.popular_max_rrpv <= RRPV_MAX,
             f"popular_max_rrpv must be in 0..{RRPV_MAX}, not {self.popular_max_rrpv}")
        need(self.policy in POLICIES,
             f"policy must be one of {', '.join(POLICIES)}, not {self.policy!r}")
        need(2 <= self.count_bits <= 8, f"count_bits must be in 2..8, not {self.count_bits}")
        need(_is_pow2(self.sketch_counters) and self.sketch_counters >= 2,
             f"sketch_counters must be a power of two >= 2, not {self.sketch_counters}")
        need(1 <= self.popular_min_count <= self.count_max,
             f"popular_min_count must be in 1..{self.count_max}, not {self.popular_min_count}")
        need(self.tag_bits >= 1,
             f"key_bits ({self.key_bits}) must exceed bank_bits + set_bits "
             f"({self.bank_bits} + {self.set_bits}) so that a tag remains")

    # --- derived widths -------------------------------------------------------------
    @property
    def key_bits(self):
        """Width of a key ``(table << row_bits) | row``."""
        return self.table_bits + self.row_bits

    @property
    def bank_bits(self):
        return int(math.log2(self.banks))

    @property
    def set_bits(self):
        return int(math.log2(self.sets))

    @property
    def way_bits(self):
        """Width of a way index (0 when there is one way)."""
        return (self.ways - 1).bit_length()

    @property
    def tag_bits(self):
        """Tags hold every hash bit above bank and set: tags are exact, never aliased."""
        return self.key_bits - self.bank_bits - self.set_bits

    @property
    def entries(self):
        """Total tag-store entries = hot-table slots."""
        return self.banks * self.sets * self.ways

    @property
    def slot_bits(self):
        """Width of a hot-table slot index."""
        return max(1, (self.entries - 1).bit_length())

    @property
    def count_max(self):
        """lfu: the value at which counters saturate."""
        return (1 << self.count_bits) - 1

    @property
    def meta_name(self):
        """The name of an entry's replacement state: ``"rrpv"`` (srrip) or ``"count"`` (lfu)."""
        return "rrpv" if self.policy == "srrip" else "count"

    @property
    def meta_bits(self):
        """Replacement state per entry: the RRPV (2 bits) or the lfu count."""
        return 2 if self.policy == "srrip" else self.count_bits

    @property
    def sketch_bits(self):
        """lfu: width of a sketch index (log2 of ``sketch_counters``)."""
        return int(math.log2(self.sketch_counters))

    @property
    def set_state_bits(self):
        """Per-set state besides the entries: the lfu sketch, 0 for srrip."""
        if self.policy == "srrip":
            return 0
        return SKETCH_ROWS * self.sketch_counters * self.count_bits

    @property
    def entry_bits(self):
        """Stored bits per entry: valid (1) + RRPV or count + tag."""
        return 1 + self.meta_bits + self.tag_bits

    @property
    def max_tables(self):
        return 1 << self.table_bits

    @property
    def max_rows(self):
        return 1 << self.row_bits

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return EALConfig(**{**asdict(self), **changes})

    def describe(self):
        """A one-line summary with the derived widths."""
        return (f"lanes={self.lanes} banks={self.banks} sets/bank={self.sets} ways={self.ways} "
                f"entries={self.entries} key={self.key_bits}b (table {self.table_bits}b + row "
                f"{self.row_bits}b) tag={self.tag_bits}b rounds={self.hash_rounds} "
                f"switch={self.dispatch_beats} queue={self.queue_depth} "
                f"in-flight={self.beats_in_flight} release={self.release_beats}"
                + ("" if self.policy == "srrip" else
                   f" policy=lfu (count {self.count_bits}b, sketch {SKETCH_ROWS}x"
                   f"{self.sketch_counters}, popular count>={self.popular_min_count})")
                + f" tag-store={self.store_bits / 8 / 2**20:.2f} MiB")

    @property
    def store_bits(self):
        """On-chip bits of the whole tag store (entries and per-set sketches)."""
        return self.entries * self.entry_bits + self.banks * self.sets * self.set_state_bits


DEFAULT_CONFIG = EALConfig()
# The paper's ASIC EAL: 2 M entries, 4-way, 64 banks, 14-bit tags -> 8 K sets per bank and
# 6 + 13 + 14 = 33 key bits. 16 lanes keeps 4 banks per lane (see docs/spec.md).
ASIC_CONFIG = EALConfig(lanes=16, banks=64, sets=8192, ways=4, table_bits=5, row_bits=28)
CONFIGS = {"default": DEFAULT_CONFIG, "asic": ASIC_CONFIG,
           "lanes1": EALConfig(lanes=1, banks=4), "lanes16": EALConfig(lanes=16, banks=64, sets=16),
           "lanes64": EALConfig(lanes=64, banks=256, sets=16),
           # The paper's accelerator as published: 64 lookup engines over 64 banks, 2 M
           # entries (one bank per lane, so banks, not lanes, bound its rate).
           "paper": EALConfig(lanes=64, banks=64, sets=8192, ways=4, table_bits=5,
                              row_bits=28)}


def _need(cond, msg):
    if not cond:
        raise ValueError(f"DeviceConfig: {msg}")


@dataclass(frozen=True)
class DeviceConfig:
    """Parameters of the whole accelerator (``HotlineAccelerator``): its lookup path
    (``eal``) and its host interface (registers over AXI4-Lite, DMA over an AXI4 master).

    Parameters
    ----------
    eal : EALConfig
        The Embedding Access Logger and its lookup engine.
    bus_bits : int
        Width of the DMA data bus (``m_axi_rdata``/``m_axi_wdata``), a power of two in
        64..512. Every DMA address a command names, every table base and stride and the row
        size must be a multiple of ``bus_bytes`` (``docs/device.md``).
    addr_bits : int
        Width of DMA bus addresses, 32..64.
    read_ids : int
        Row reads the gather/write-back engine keeps in flight, each under its own AXI ID; a
        power of two >= 2. With ``burst_beats`` it sets the bytes in flight: enough to cover
        ``read_ids * burst_beats`` cycles of host latency at full rate.
    burst_beats : int
        Longest DMA burst in beats, a power of two in 1..256 (AXI4 INCR allows 256); bursts
        never cross a 4 KiB boundary either.
    max_row_bytes : int
        Largest row a gather or write-back may move (run-time ``ROW_BYTES`` <= this), a
        multiple of ``bus_bytes``.
    cmd_depth : int
        Commands the command FIFO holds (a power of two >= 2).
    max_count : int
        Most list entries (keys, rows) one command may name.
    csr_addr_bits : int
        Width of the register (AXI4-Lite) address, 12..16: the register space is
        ``2**csr_addr_bits`` bytes.
    word_writes : int
        Result and dump words in write bursts awaiting their B response (``word_writes /
        burst_beats`` bursts), a power of two >= 2: they keep the writes at the bus rate
        against about ``word_writes`` cycles of write-response latency. Only a counter
        grows with it (``hotline_hw/dma/burst_writer.py``).
    list_beats : int
        Key-list beats each list reader buffers (and so reads ahead), a power of two >=
        ``2 * burst_beats``: LEARN / LOOKUP / GATHER keep reading their list at the bus rate
        against about ``list_beats`` cycles of read latency (block RAM: ``list_beats x
        (bus_bits + 1)`` bits per reader).
    """

    eal: EALConfig = EALConfig()
    bus_bits: int = 128
    addr_bits: int = 64
    read_ids: int = 128
    burst_beats: int = 8
    max_row_bytes: int = 1024
    cmd_depth: int = 16
    max_count: int = (1 << 24) - 1
    csr_addr_bits: int = 12
    word_writes: int = 1024
    list_beats: int = 1024

    def __post_init__(self):
        if not isinstance(self.eal, EALConfig):
            raise TypeError(f"DeviceConfig: eal must be an EALConfig, not {self.eal!r}")
        for name in ("bus_bits", "addr_bits", "read_ids", "burst_beats", "max_row_bytes",
                     "cmd_depth", "max_count", "csr_addr_bits", "word_writes", "list_beats"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"DeviceConfig: {name} must be an int, not {value!r}")
        _need(_is_pow2(self.bus_bits) and 64 <= self.bus_bits <= 512,
              f"bus_bits must be a power of two in 64..512, not {self.bus_bits}")
        _need(32 <= self.addr_bits <= 64, f"addr_bits must be in 32..64, not {self.addr_bits}")
        _need(_is_pow2(self.read_ids) and self.read_ids >= 2,
              f"read_ids must be a power of two >= 2, not {self.read_ids}")
        _need(_is_pow2(self.burst_beats) and self.burst_beats <= 256,
              f"burst_beats must be a power of two in 1..256, not {self.burst_beats}")
        _need(self.burst_beats * self.bus_bytes <= 4096,
              f"a {self.burst_beats}-beat burst of {self.bus_bytes} B is more than 4 KiB")
        _need(self.max_row_bytes >= self.bus_bytes and self.max_row_bytes % self.bus_bytes == 0
              and self.max_row_bytes < 1 << 16,
              f"max_row_bytes must be a multiple of bus_bytes ({self.bus_bytes}) below 64 KiB, "
              f"not {self.max_row_bytes}")
        _need(_is_pow2(self.cmd_depth) and self.cmd_depth >= 2,
              f"cmd_depth must be a power of two >= 2, not {self.cmd_depth}")
        _need(1 <= self.max_count < 1 << 32, f"max_count must be in 1..2**32-1, not {self.max_count}")
        _need(_is_pow2(self.word_writes) and self.word_writes >= 2,
              f"word_writes must be a power of two >= 2, not {self.word_writes}")
        _need(_is_pow2(self.list_beats) and self.list_beats >= 2 * self.burst_beats,
              f"list_beats must be a power of two >= 2 x burst_beats "
              f"({2 * self.burst_beats}), not {self.list_beats}")
        _need(12 <= self.csr_addr_bits <= 16,
              f"csr_addr_bits must be in 12..16, not {self.csr_addr_bits}")
        _need(self.eal.slot_bits <= 32, f"the hot-table slot ({self.eal.slot_bits} bits) must "
              f"fit the 32-bit slot field of a lookup result word")
        _need(self.eal.tag_bits <= 60, f"a tag of {self.eal.tag_bits} bits does not fit the "
              f"60-bit tag field of a dump word")

    @property
    def bus_bytes(self):
        """Bytes per DMA data beat."""
        return self.bus_bits // 8

    @property
    def beat_offset_bits(self):
        """log2(bus_bytes): the byte-offset bits of an address within a data beat."""
        return (self.bus_bytes - 1).bit_length()

    @property
    def words_per_beat(self):
        """64-bit list words (keys, results, dump entries) per data beat."""
        return self.bus_bits // 64

    @property
    def max_tables(self):
        """Table register slots (``TABLE_BASE``/``STRIDE``/``ROWS``): one per table id."""
        return self.eal.max_tables

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return DeviceConfig(**{**{f: getattr(self, f) for f in self.__dataclass_fields__},
                               **changes})

    def describe(self):
        """A one-line summary of the host interface and the EAL."""
        return (f"bus={self.bus_bits}b addr={self.addr_bits}b read_ids={self.read_ids} "
                f"burst={self.burst_beats} beats row<={self.max_row_bytes} B "
                f"cmd_depth={self.cmd_depth} word_writes={self.word_writes} list_beats={self.list_beats} | EAL {self.eal.describe()}")


DEFAULT_DEVICE = DeviceConfig()
# A small device for fast Verilator builds in tests: one lookup lane, four banks.
SMALL_DEVICE = DeviceConfig(eal=CONFIGS["lanes1"], read_ids=16, cmd_depth=4)
DEVICE_CONFIGS = {"default": DEFAULT_DEVICE, "small": SMALL_DEVICE,
                  "bus64": SMALL_DEVICE.replace(bus_bits=64),
                  "bus512": SMALL_DEVICE.replace(bus_bits=512, burst_beats=8)}


# The de-duplication hash (docs/spec.md section 7.5): Fibonacci hashing of the key folded to
# 32 bits; the top bits of the product are well mixed even for keys that differ in few bits.
DEDUP_MULTIPLIER = 0x9E3779B1


@dataclass(frozen=True)
class FragmenterConfig:
    """Parameters of the input classifier and the working-set fragmenter
    (``hotline_hw.fragmenter``; docs/spec.md section 7.5).

    Parameters
    ----------
    eal : EALConfig
        The lookup engine the fragmenter follows (lanes, key and slot widths, ``entries``).
    dedup_banks : int
        Banks of the de-duplication table, a power of two: a cycle serves one cold lookup per
        bank, so more banks mean fewer stalls when cold lookups of one beat meet in a bank.
    dedup_sets : int
        Buckets per bank, a power of two.
    dedup_ways : int
        Entries per bucket (one memory word); probing moves to the next bucket when a bucket
        is full.
    epoch_bits : int
        Width of the working-set number kept in each entry: entries of older working sets
        are stale without being erased; the table is cleared every ``2**epoch_bits - 1``
        working sets (``dedup_sets`` cycles).
    inputs_bits : int
        A working set holds at most ``2**inputs_bits`` inputs (width of input indices).
    out_depth : int
        Beats each output stream buffers before back-pressure stalls the fragmenter.
    key_fifo_depth : int
        Key beats the chain (``FragmentChain``) holds while their lookups are in the lookup
        engine; at least the engine's depth, or the chain slows down.
    """

    eal: EALConfig = EALConfig()
    dedup_banks: int = 32
    dedup_sets: int = 128
    dedup_ways: int = 8
    epoch_bits: int = 4
    inputs_bits: int = 20
    out_depth: int = 16
    key_fifo_depth: int = 32

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise ValueError(f"FragmenterConfig: {msg}")
        if not isinstance(self.eal, EALConfig):
            raise TypeError(f"FragmenterConfig: eal must be an EALConfig, not {self.eal!r}")
        for name in ("dedup_banks", "dedup_sets", "dedup_ways", "epoch_bits", "inputs_bits",
                     "out_depth", "key_fifo_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"FragmenterConfig: {name} must be an int, not {value!r}")
        need(_is_pow2(self.dedup_banks), f"dedup_banks must be a power of two, not {self.dedup_banks}")
        need(_is_pow2(self.dedup_sets) and self.dedup_sets >= 2,
             f"dedup_sets must be a power of two >= 2, not {self.dedup_sets}")
        need(self.dedup_bank_bits + self.dedup_set_bits <= 32,
             f"dedup_banks * dedup_sets ({self.dedup_banks * self.dedup_sets}) must be <= 2**32")
        need(self.dedup_ways >= 1, f"dedup_ways must be >= 1, not {self.dedup_ways}")
        need(1 <= self.epoch_bits <= 16, f"epoch_bits must be in 1..16, not {self.epoch_bits}")
        need(1 <= self.inputs_bits <= 31, f"inputs_bits must be in 1..31, not {self.inputs_bits}")
        need(self.out_depth >= 2, f"out_depth must be >= 2, not {self.out_depth}")
        need(self.key_fifo_depth >= 2, f"key_fifo_depth must be >= 2, not {self.key_fifo_depth}")
        need(self.bank_capacity >= self.eal.max_tables,
             f"a dedup bank holds {self.bank_capacity} cold rows (3/4 of dedup_sets * "
             f"dedup_ways = {self.dedup_sets * self.dedup_ways}), fewer than the "
             f"{self.eal.max_tables} lookups of one input: raise dedup_sets or dedup_ways")

    @property
    def dedup_bank_bits(self):
        return int(math.log2(self.dedup_banks))

    @property
    def dedup_set_bits(self):
        return int(math.log2(self.dedup_sets))

    @property
    def bank_capacity(self):
        """Cold rows a bank may hold in one working set: 3/4 of its entries, so that linear
        probing always finds a free entry within a few buckets."""
        n = self.dedup_sets * self.dedup_ways
        return n - n // 4

    @property
    def cold_capacity(self):
        """Most cold rows one working set can have (every bank at capacity)."""
        return self.dedup_banks * self.bank_capacity

    @property
    def rank_bits(self):
        """Width of a cold-row rank (position in the cold list)."""
        return max(1, (self.cold_capacity - 1).bit_length())

    @property
    def remap_bits(self):
        """Width of a remapped lookup: an index into ``[hot table; cold rows]``."""
        return max(1, (self.eal.entries + self.cold_capacity - 1).bit_length())

    @property
    def dedup_entry_bits(self):
        """Stored bits per de-dup entry: epoch + key + rank."""
        return self.epoch_bits + self.eal.key_bits + self.rank_bits

    @property
    def dedup_memory_bits(self):
        """Bits of the whole de-dup table."""
        return self.dedup_banks * self.dedup_sets * self.dedup_ways * self.dedup_entry_bits

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return FragmenterConfig(**{**{f: getattr(self, f) for f in self.__dataclass_fields__},
                                   **changes})

    def describe(self):
        """A one-line summary of the de-dup table and buffers."""
        return (f"dedup {self.dedup_banks} banks x {self.dedup_sets} buckets x {self.dedup_ways} "
                f"ways ({self.dedup_memory_bits / 8 / 1024:.1f} KiB, {self.cold_capacity} cold "
                f"rows/working set, {self.bank_capacity}/bank) epoch={self.epoch_bits}b "
                f"inputs<=2^{self.inputs_bits} out_depth={self.out_depth} "
                f"key_fifo={self.key_fifo_depth} | EAL {self.eal.describe()}")


DEFAULT_FRAGMENTER = FragmenterConfig()

#: Standard deviations of a de-dup bank's load kept free by `fragmenter_for_working_set`.
DEDUP_MARGIN_SIGMAS = 6.0


def fragmenter_for_working_set(eal, inputs, lookups_per_input, cold_share=1.0,
                               sigmas=DEDUP_MARGIN_SIGMAS, base=None):
    """A `FragmenterConfig` whose de-dup table holds the cold rows of a working set of
    ``inputs`` inputs with ``lookups_per_input`` lookups each (``n_tables`` for one-hot
    inputs; the widest input for bags), so that the bank-capacity rule of docs/spec.md 7.5
    (almost) never ends a working set early. For the software driver's schedules; the RTL's
    named configurations (``FRAGMENTER_CONFIGS``) are not sized this way.

    Expected cold rows: ``R = ceil(cold_share * inputs * lookups_per_input)``. The default
    ``cold_share = 1.0`` is the worst case (every lookup a distinct cold row), which needs no
    knowledge of the data; a caller that knows its miss rate may pass less (fewer cold-buffer
    rows, see ``sw_driver.training.memory_budget``). The hash spreads distinct keys over the
    ``dedup_banks`` banks about binomially, so a bank holds ``m = R / banks`` rows on
    average, with a standard deviation ``sqrt(m)``. The rule keeps ``bank_capacity -
    lookups_per_input >= m + sigmas * sqrt(m)`` (6 sigma: below 1e-9 per bank and working
    set); ``dedup_sets`` is the smallest power of two that does it, starting from ``base``'s
    (default `FragmenterConfig` of ``eal``: never smaller). Banks and ways stay ``base``'s,
    and ``inputs_bits`` grows to hold ``inputs``.
    """
    if base is None:
        base = FragmenterConfig(eal=eal)
    elif base.eal != eal:
        raise ValueError("fragmenter_for_working_set: base.eal is not eal")
    inputs, widest = int(inputs), int(lookups_per_input)
    if inputs < 1 or widest < 1:
        raise ValueError(f"fragmenter_for_working_set: inputs ({inputs}) and "
                         f"lookups_per_input ({widest}) must be >= 1")
    if not 0.0 < cold_share <= 1.0:
        raise ValueError(f"fragmenter_for_working_set: cold_share must be in (0, 1], not "
                         f"{cold_share}")
    expected = math.ceil(cold_share * inputs * widest)
    per_bank = expected / base.dedup_banks
    need = per_bank + sigmas * math.sqrt(per_bank) + widest
    sets = base.dedup_sets
    while base.replace(dedup_sets=sets).bank_capacity < need:
        sets *= 2
    inputs_bits = max(base.inputs_bits, (inputs - 1).bit_length())
    if sets == base.dedup_sets and inputs_bits == base.inputs_bits:
        return base
    return base.replace(dedup_sets=sets, inputs_bits=inputs_bits)


# Small configurations for fast builds and for tests that overflow the de-dup table.
FRAGMENTER_CONFIGS = {
    "default": DEFAULT_FRAGMENTER,
    "small": FragmenterConfig(eal=CONFIGS["lanes1"], dedup_banks=4, dedup_sets=16,
                              dedup_ways=4, epoch_bits=2, inputs_bits=16, out_depth=4,
                              key_fifo_depth=16),
    "lanes4_small": FragmenterConfig(dedup_banks=8, dedup_sets=16, dedup_ways=4,
                                     epoch_bits=2, inputs_bits=16, out_depth=4),
    # Fewer stalls on all-cold working sets (90 % of the lane rate instead of 75 %) for the
    # same 192 KiB, at four times the compare logic (and Verilator build time).
    "dedup64": FragmenterConfig(dedup_banks=64, dedup_sets=32, dedup_ways=16),
}
