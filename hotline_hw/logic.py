"""Small combinational building blocks shared by the RTL blocks."""

from amaranth import Cat, Const, Signal

__all__ = ["or_tree", "one_hot", "select_one_hot"]


def or_tree(values):
    """OR of many values as a balanced tree: a linear chain makes elaboration quadratic."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] | values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def one_hot(m, value, n, name):
    """``n``-bit one-hot decode of ``value`` (bit ``value`` set), as two smaller decodes of
    its low and high bits ANDed together (each a named signal of ``m``: an expression used
    twice would be built twice). A constant ``1 << value`` would become a barrel shifter in
    synthesis, and one comparator per output would cost ``n`` netlist nodes."""
    bits = max(0, (n - 1).bit_length())
    if bits == 0:
        return Const(1, 1)
    low_bits = bits // 2
    low = Signal(1 << low_bits, name=f"{name}_low")
    high = Signal(1 << (bits - low_bits), name=f"{name}_high")
    m.d.comb += [
        low.eq(Cat(value[:low_bits] == k for k in range(1 << low_bits)) if low_bits else 1),
        high.eq(Cat(value[low_bits:bits] == k for k in range(1 << (bits - low_bits)))),
    ]
    return Cat(low & high[h].replicate(len(low)) for h in range(len(high)))[:n]


def select_one_hot(select, columns):
    """The AND-OR multiplexer: bit ``j`` of the result is ``(select & columns[j]).any()``,
    where ``columns[j]`` holds bit ``j`` of every input (one per bit of the one-hot
    ``select``). A variable ``word_select`` would synthesize as a barrel shifter over all
    inputs; this is one AND and an OR tree per bit."""
    return Cat((select & column).any() for column in columns)
