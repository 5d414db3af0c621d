"""cocotb testbenches of the Hotline RTL, run under Verilator through :mod:`verif.tb.runner`."""
