"""Small combinational building blocks shared by the RTL blocks."""

import operator

from amaranth import Cat, Const, Signal

__all__ = ["tree", "or_tree", "one_hot_index", "one_hot_halves", "one_hot_from_halves", "bit_columns",
           "select_one_hot", "wanted_by_bank", "oldest_per_bank"]


def tree(op, values):
    """``values`` combined pairwise with ``op`` in a balanced tree (log depth; a linear
    chain also makes elaboration quadratic)."""
    values = list(values)
    if not values:
        raise ValueError("tree of no values")
    while len(values) > 1:
        values = [op(values[i], values[i + 1]) if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def or_tree(values):
    """OR of many values as a balanced tree."""
    return tree(operator.or_, values)


def one_hot_index(m, one_hot, name):
    """The position of the set bit of ``one_hot`` (0 when none), a signal of ``m``: each
    index bit an OR of the positions that have it, not a chain of ``m.If``s."""
    n = len(one_hot)
    index = Signal(range(max(n, 2)), name=name)
    for b in range(len(index)):
        positions = [one_hot[k] for k in range(n) if (k >> b) & 1]
        m.d.comb += index[b].eq(or_tree(positions) if positions else 0)
    return index


def one_hot_halves(value, n):
    """A one-hot decode of ``value`` (``n`` outputs) in two small halves: ``(low, high)``,
    one-hot codes of the low and the high half of ``value``'s bits (``1 << (bits // 2)`` and ``1 << (bits - bits //
    2)`` wide). A block that keeps a decoded value in registers stores these
    (``2 x sqrt(n)`` bits, not ``n``) and combines them with :func:`one_hot_from_halves`,
    one AND per output bit. A ``1 << value`` would become a barrel shifter in synthesis,
    and one comparator per output would cost ``n`` netlist nodes."""
    bits = max(0, (n - 1).bit_length())
    low_bits = bits // 2
    low = Cat(value[:low_bits] == k for k in range(1 << low_bits)) if low_bits else Const(1, 1)
    high = (Cat(value[low_bits:bits] == k for k in range(1 << (bits - low_bits))) if bits
            else Const(1, 1))
    return low, high


def one_hot_from_halves(low, high, n):
    """``n``-bit one-hot code from the halves of :func:`one_hot_halves`."""
    return Cat(low & high[h].replicate(len(low)) for h in range(len(high)))[:n]


def bit_columns(m, words, width, name):
    """The inputs of :func:`select_one_hot`: for each bit ``j < width`` a named wire of ``m``
    holding bit ``j`` of every word in ``words`` (word ``i`` in bit ``i``). A wire, because
    every select reads it: a ``Cat`` expression would be rebuilt at each use."""
    columns = []
    for j in range(width):
        column = Signal(len(words), name=f"{name}_bit{j}")
        m.d.comb += column.eq(Cat(word[j] for word in words))
        columns.append(column)
    return columns


def select_one_hot(select, columns):
    """The AND-OR multiplexer: bit ``j`` of the result is ``(select & columns[j]).any()``,
    where ``columns[j]`` holds bit ``j`` of every input (one per bit of the one-hot
    ``select``). A variable ``word_select`` would synthesize as a barrel shifter over all
    inputs; this is one AND and an OR tree per bit."""
    return Cat((select & column).any() for column in columns)


def wanted_by_bank(m, lows, highs, enables, n_banks, name):
    """Per bank, which held lanes want it: bit ``i`` of bank ``b``'s vector is set when
    lane ``i`` is enabled and its bank (kept as the halves of :func:`one_hot_halves`,
    ``lows[i]`` and ``highs[i]``) is ``b``. Built from columns (bit ``k`` of every lane's
    low half, and so on) with one AND per bank of whole vectors, not lane by lane: the same
    logic, but elaboration no longer transposes a ``lanes x banks`` matrix bit by bit."""
    low_columns = bit_columns(m, lows, len(lows[0]), f"{name}_low")
    high_columns = bit_columns(m, highs, len(highs[0]), f"{name}_high")
    enabled = Signal(len(enables), name=f"{name}_enabled")
    m.d.comb += enabled.eq(Cat(enables))
    wanted = []
    for b in range(n_banks):
        want = Signal(len(enables), name=f"{name}{b}_wanted_by")
        m.d.comb += want.eq(low_columns[b % len(low_columns)]
                            & high_columns[b // len(low_columns)] & enabled)
        wanted.append(want)
    return wanted


def oldest_per_bank(m, wanted, name):
    """Oldest-first arbitration of held lanes (oldest first in each vector) over banks,
    without comparing lanes with each other: ``wanted[b]`` has bit ``i`` set when lane
    ``i`` wants bank ``b`` (:func:`wanted_by_bank`). For each bank returns ``(any,
    oldest)``: whether any lane wants it, and the oldest such lane as a one-hot vector
    (``want & -want``, a carry chain). The bank switch and the result release both
    arbitrate this way."""
    result = []
    for b, want in enumerate(wanted):
        oldest = Signal(len(want), name=f"{name}{b}_oldest")
        m.d.comb += oldest.eq(want & (~want + 1))
        result.append((want.any(), oldest))
    return result
