"""A small mutation runner for the device (issue 21): one-line mutants, one at a time.

Each :class:`Mutant` names a file, an exact piece of one of its lines (unique in the file,
or picked by ``nth``), what replaces it, why the slip is plausible, and the test commands
that should see it. The runner copies the repository (tracked and untracked, not ignored,
files) into a work folder, so the checkout it runs from is never edited and tests that run
there meanwhile are not disturbed; then, per mutant, it edits the copy, runs the commands
in the copy (in order, stopping at the first that fails) with a timeout, restores the file
(``try``/``finally``) and records:

* ``killed``: a command failed; the first failing test is named, and a failure that was a
  hang caught by the test's own cycle budget (``BudgetExceeded`` in the device tests, a
  cycle-budget assertion in the unit tests) is marked as such;
* ``survived``: every command passed;
* ``timeout``: the runner's timeout ended a command: *not* counted as killed (nothing in
  the test reported the hang);
* ``invalid``: the mutated file does not compile (a broken mutant, not a kill).

Usage::

    python -m verif.mutation                       # every mutant, markdown table
    python -m verif.mutation --only SEQ-3,DEC-1    # some of them
    python -m verif.mutation --fast                # skip the Verilator (slow) mutants
    python -m verif.mutation --list                # the mutants, nothing run
    python -m verif.mutation --json out.json       # also the results as JSON

Verilator mutants rebuild the device once each (about 2 minutes), under ``nice -n 10``.
"""

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORKDIR = Path(os.environ.get("HOTLINE_MUTATION_DIR", "/tmp/hotline-mutation"))

__all__ = ["Mutant", "MUTANTS", "apply", "run_mutant", "markdown"]


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One one-line mutant.

    ``find`` is replaced by ``replace``; it must lie on one line and be unique in ``file``
    unless ``nth`` (0-based) picks an occurrence. ``tests``: pytest argument lists, run in
    order. ``slow``: the tests are the Verilator device tests. ``equivalent``: why the mutant
    cannot change behaviour (kept in the table; it is still run).
    """

    id: str
    file: str
    find: str
    replace: str
    why: str
    tests: tuple
    nth: int = None
    slow: bool = False
    equivalent: str = ""


# ---- the test commands --------------------------------------------------------------------
U = "tests/test_hw_device_units.py"
X = "tests/test_hw_device_mutants.py"
SEQ_T = ((U + "::test_sequencer_runs_in_order_halts_and_drops",
          X + "::test_sequencer_outcomes_pulses_and_starts"),)
DEC_T = ((U + "::test_decoder_matches_the_drivers_checks",),)
BLAME_T = ((X + "::test_first_in_list_matches_reference",),)
KC_T = (("tests/test_hw_list_input.py", "-k", "key_checker"),
        (X + "::test_key_checker_row_boundaries",))
LR_T = (("tests/test_hw_list_input.py", "-k", "list_reader"),)
LF_T = (("tests/test_hw_list_input.py", "-k", "lane_formatter"),)
PK_T = (("tests/test_hw_writers.py", "-k", "packer"),)
BW_T = (("tests/test_hw_writers.py", "-k", "burst_writer"),)
AX_T = (("tests/test_hw_writers.py", "-k", "arbiter"),)
CSR_T = (("tests/test_hw_csr.py",),)
A = "tests/test_rtl_accelerator.py::"
DEV_ERRORS = A + "test_refused_commands_dma_errors_recovery"
DEV_LOOKUPS = A + "test_lookups_dump_clear_match_golden_model"
DEV_MOVE_ERR = A + "test_list_error_in_move_pass_after_clean_check"
DEV_DUMP_ERR = A + "test_dump_write_error"
DEV_ROWS = A + "test_gather_write_back_every_byte_and_hazard"

D = "hotline_hw/device/"
M = "hotline_hw/dma/"

MUTANTS = [
    # ---- sequencer ------------------------------------------------------------------------
    Mutant("SEQ-1", D + "sequencer.py", "m.d.sync += [self.halted.eq(1), self.error.eq(fail_record),",
           "m.d.sync += [self.halted.eq(0), self.error.eq(fail_record),",
           "halting: a failed command does not halt the queue", SEQ_T),
    Mutant("SEQ-2", D + "sequencer.py", "with m.If(self.err_ack):", "with m.If(1):",
           "halting: the halt ends (and the queue drops) without the host's err_ack", SEQ_T),
    Mutant("SEQ-3", D + "sequencer.py", "m.d.sync += self.dropped.eq(self.dropped + 1)",
           "m.d.sync += self.dropped.eq(self.dropped)",
           "dropping: dropped commands are not counted", SEQ_T),
    Mutant("SEQ-4", D + "sequencer.py", "m.d.sync += [self.halted.eq(0), self.error.eq(0), self.err_command.eq(0)]",
           "m.d.sync += [self.error.eq(0), self.err_command.eq(0)]",
           "dropping: the halt is never left after the queue is dropped", SEQ_T),
    Mutant("SEQ-5", D + "sequencer.py", "with m.If(finish_ok | finish_fail):", "with m.If(finish_ok):",
           "completion counting: failed commands not counted as completed", SEQ_T),
    Mutant("SEQ-6", D + "sequencer.py", "self.irq_done.eq(finish_ok & cmd.irq)",
           "self.irq_done.eq((finish_ok | finish_fail) & cmd.irq)",
           "irq: the done interrupt also for a failed command", SEQ_T),
    Mutant("SEQ-7", D + "sequencer.py", "entry.seq.eq(self.submitted)", "entry.seq.eq(self.completed)",
           "sequence numbers: taken from the wrong counter", SEQ_T),
    Mutant("SEQ-8", D + "sequencer.py", "m.d.sync += [kind.eq(decoder.kind), refusal.eq(decoder.error)]",
           "m.d.sync += [kind.eq(ExecutorKind.LOOKUP), refusal.eq(decoder.error)]",
           "executor dispatch: every command to the lookup executor", SEQ_T),
    Mutant("SEQ-9", D + "sequencer.py", "with m.If(refusal.valid):", "with m.If(0):",
           "dispatch: a refused command is started instead of failing", SEQ_T),
    Mutant("SEQ-10", D + "sequencer.py", "with m.If(~self.engine_busy):", "with m.If(1):",
           "reset: the first command runs before the tag store is cleared", SEQ_T),
    Mutant("SEQ-11", D + "sequencer.py",
           "self.busy.eq(self.init | ~fsm.ongoing(\"IDLE\") | waiting)",
           "self.busy.eq(self.init | ~fsm.ongoing(\"IDLE\"))",
           "STATUS.busy low while commands wait in the queue", SEQ_T),
    Mutant("SEQ-12", D + "sequencer.py", "with m.If((kind == k) & job.done):", "with m.If(job.done):",
           "executor dispatch: any executor's done ends the command", SEQ_T,
           equivalent="an executor pulses done only after its own start and the sequencer "
                      "starts one executor at a time and waits for it, so only the running "
                      "executor's done can be high in RUN; the loop's last matching m.If "
                      "then still takes that executor's error record"),
    # ---- decoder --------------------------------------------------------------------------
    Mutant("DEC-1", D + "decoder.py", "with m.If(op > max(Opcode)):", "with m.If(op >= max(Opcode)):",
           "opcode check off by one (the highest opcode refused)", DEC_T),
    Mutant("DEC-2", D + "decoder.py", "(cmd.count > c.max_count)", "(cmd.count >= c.max_count)",
           "count check off by one", DEC_T),
    Mutant("DEC-3", D + "decoder.py", "bad_count = Mux(op == Opcode.DUMP, cmd.count != c.eal.entries,",
           "bad_count = Mux(op == Opcode.DUMP, 0,",
           "DUMP's count not checked", DEC_T),
    Mutant("DEC-4", D + "decoder.py", "with m.Elif(is_list & (cmd.addr0[:3] != 0)):",
           "with m.Elif(is_list & (cmd.addr0[:2] != 0)):",
           "key list alignment checked to 4 bytes, not 8", DEC_T),
    Mutant("DEC-5", D + "decoder.py", "with m.Elif(is_rows & ((cmd.addr1 & beat_mask) != 0)):",
           "with m.Elif(is_rows & (cmd.addr1[:3] != 0)):",
           "row buffer alignment checked to 8 bytes, not a bus beat", DEC_T),
    Mutant("DEC-6", D + "decoder.py", "(rb > c.max_row_bytes)", "(rb >= c.max_row_bytes)",
           "ROW_BYTES limit off by one", DEC_T),
    Mutant("DEC-7", D + "decoder.py", "with m.Elif(bad_count):",
           "with m.Elif(bad_count & ~(is_list & (cmd.addr0[:3] != 0))):",
           "order of checks: a misaligned list reported before a bad count", DEC_T),
    # ---- blame (which error a failed list command reports) --------------------------------
    Mutant("BLM-1", D + "blame.py", "(check.addr < read.addr)", "(check.addr > read.addr)",
           "blame order: the later of the key error and the read error reported", BLAME_T),
    Mutant("BLM-2", D + "blame.py", "for rec in reversed(later):", "for rec in later:",
           "blame order: the last, not the first, of the write errors", BLAME_T),
    # ---- KeyChecker ----------------------------------------------------------------------
    Mutant("KC-1", M + "key_checker.py", "list(c_bad[:k + 1]))", "list(c_bad[:k]) + [Const(0, 1)])",
           "cut: the bad key itself is forwarded", KC_T),
    Mutant("KC-2", M + "key_checker.py", "index=word_no - skip)", "index=word_no)",
           "error record: index counted from the beat, not the list", KC_T),
    Mutant("KC-3", M + "key_checker.py", "oob.eq(bw[:e.row_bits] >= ent.rows)",
           "oob.eq(bw[:e.row_bits] > ent.rows)", "row range check off by one", KC_T),
    Mutant("KC-4", M + "key_checker.py", "| (ent.stride < self.row_bytes)),",
           "| (ent.stride <= self.row_bytes)),", "BAD_TABLE: stride == ROW_BYTES refused", KC_T),
    Mutant("KC-5", M + "key_checker.py", "live.eq(c_valid & ~stopped & ~c_err)",
           "live.eq(c_valid & ~stopped)", "a beat the bus answered with an error is forwarded",
           KC_T),
    Mutant("KC-6", M + "key_checker.py", "with m.Elif(self.check_rows & oob):", "with m.Elif(oob):",
           "row range checked for LEARN/LOOKUP too", KC_T),
    # ---- ListReader ----------------------------------------------------------------------
    Mutant("LR-1", M + "list_reader.py", "(Const(1, W + 1) << end) - 1))", "(Const(1, W + 1) << end)))",
           "mask: the last beat's partial mask built wrong", LR_T),
    Mutant("LR-2", M + "list_reader.py", "m.d.comb += credit_ok.eq(credits >= bmax)",
           "m.d.comb += credit_ok.eq(credits != 0)",
           "credit: a burst issued without room for all of it", LR_T),
    Mutant("LR-3", M + "list_reader.py", "cap.eq(bmax - (next_addr[lb:lb + bw] if bw else 0)),",
           "cap.eq(bmax),", "bursts not cut at burst boundaries (crossing 4 KiB)", LR_T),
    Mutant("LR-4", M + "list_reader.py", "index=Mux(rx_first, 0, rx_pos))", "index=rx_pos)",
           "error record: index of a failing first beat negative", LR_T),
    Mutant("LR-5", M + "list_reader.py", "                             & ~self.error.valid)",
           "                             )", "bursts still issued after a read error", LR_T),
    # ---- LaneFormatter --------------------------------------------------------------------
    Mutant("LF-1", M + "lane_formatter.py", "valid.append(h_mask[w] & pick[g])", "valid.append(pick[g])",
           "masked-off words become lookups", LF_T),
    Mutant("LF-2", M + "lane_formatter.py",
           "self.beats.ready.eq((h_rem == 0) | (emit & ((h_rem & ~pick) == 0)))",
           "self.beats.ready.eq(h_rem == 0)",
           "a new beat only after the last group left (a bubble per beat)", LF_T),
    # ---- Packer --------------------------------------------------------------------------
    Mutant("PK-1", M + "packer.py", "m.d.comb += full.eq(fill + a_n >= W)",
           "m.d.comb += full.eq(fill + a_n > W)", "a full beat held back", PK_T),
    Mutant("PK-2", M + "packer.py", "with m.If(bmask != 0):", "with m.If(1):",
           "flush emits an empty beat", PK_T),
    Mutant("PK-3", M + "packer.py", "m.d.sync += [fill.eq(self.offset), bmask.eq(0),",
           "m.d.sync += [fill.eq(0), bmask.eq(0),", "start offset ignored", PK_T),
    # ---- BurstWriter ---------------------------------------------------------------------
    Mutant("BW-1", M + "burst_writer.py", "m.d.comb += whole.eq(unclaimed > full_m1)",
           "m.d.comb += whole.eq(unclaimed >= full_m1)",
           "AW issued one beat before the burst's data is all in the FIFO", BW_T),
    Mutant("BW-2", M + "burst_writer.py", "off.eq(0), chunk.eq(chunk + 1)]", "chunk.eq(chunk + 1)]",
           "4 KiB / chunks: the first burst's offset kept for the next", BW_T),
    Mutant("BW-3", M + "burst_writer.py", "m.d.comb += self.idle.eq((q.level == 0) & (outstanding == 0))",
           "m.d.comb += self.idle.eq(q.level == 0)",
           "B counting: idle before every burst is answered", BW_T),
    Mutant("BW-4", M + "burst_writer.py", "cause=resp_cause(1, axi.bresp), engine=self.engine, addr=oldest)",
           "cause=resp_cause(1, axi.bresp), engine=self.engine, addr=aw_addr)",
           "error: the last issued burst's address, not the failing one's", BW_T),
    Mutant("BW-5", M + "burst_writer.py", "m.d.comb += issue.eq(~err & (~aw_valid | axi.awready)",
           "m.d.comb += issue.eq((~aw_valid | axi.awready)",
           "error: bursts still issued after a B error", BW_T),
    # ---- AxiArbiter ----------------------------------------------------------------------
    Mutant("AX-1", M + "axi_mux.py", "m.d.comb += head[i].eq(order.r_rdy & (order.r_data == i))",
           "m.d.comb += head[i].eq(order.r_data == i)",
           "W routing: W passes before its AW was accepted", AX_T),
    Mutant("AX-2", M + "axi_mux.py", "m.d.comb += order.r_en.eq(out.wvalid & out.wready & out.wlast)",
           "m.d.comb += order.r_en.eq(out.wvalid & out.wready)",
           "W routing: the next writer after one beat, not after wlast", AX_T),
    Mutant("AX-3", M + "axi_mux.py", "hit = (out_id[w:] == (bases[name] >> w))",
           "hit = (out_id[w:] == bases[name])", "ID routing: prefix compared unshifted", AX_T),
    Mutant("AX-4", M + "axi_mux.py", "m.d.sync += [held.eq(out.arvalid & ~out.arready), owner.eq(grant)]",
           "m.d.sync += [held.eq(0), owner.eq(grant)]",
           "AR grant not held while waiting for arready", AX_T),
    # ---- CSR bank ------------------------------------------------------------------------
    Mutant("CSR-1", "hotline_hw/csr.py", "bresp.eq(Mux(w_unmapped | w_read_only | w_refused,",
           "bresp.eq(Mux(w_unmapped | w_read_only,", "a refused write answered OKAY", CSR_T),
    Mutant("CSR-2", "hotline_hw/csr.py", "rresp.eq(Mux(r_unmapped_s2, RESP_SLVERR, RESP_OKAY))",
           "rresp.eq(Mux(r_unmapped, RESP_SLVERR, RESP_OKAY))",
           "read response from the wrong pipeline stage", CSR_T),
    Mutant("CSR-3", "hotline_hw/csr.py", "m.d.sync += q.eq(((q & ~w1c_clear[r.name]) | sets) & r.mask)",
           "m.d.sync += q.eq(((q | sets) & ~w1c_clear[r.name]) & r.mask)",
           "sticky bits: clear wins over a set of the same cycle", CSR_T),
    Mutant("CSR-4", "hotline_hw/csr.py", "w_unmapped.eq(go & ~(or_tree(list(wsel.values())) | wt_word.any())),",
           "w_unmapped.eq(go & ~or_tree(list(wsel.values()))),",
           "writes to the table RAM reported unmapped", CSR_T),
    # ---- executors and the row mover (Verilator device tests) ------------------------------
    Mutant("EX-1", D + "lookup_executor.py", "with m.If(~reader.busy & ~checker.busy & (returned == checker.passed)",
           "with m.If(~reader.busy & ~checker.busy", "LEARN/LOOKUP end: flush before every "
           "result returned", ((X + "::test_lookup_executor_writes_every_result",), (DEV_LOOKUPS,)),
           slow=True),
    Mutant("EX-2", D + "row_executor.py", "m.d.comb += mover.stop.eq(stream_idle & cut_short)",
           "m.d.comb += mover.stop.eq(cut_short)",
           "GATHER end: the mover stopped while good keys are still on their way",
           ((X + "::test_row_executor_cut_short_by_a_list_read_error",), (DEV_MOVE_ERR,)),
           slow=True),
    Mutant("EX-3", D + "row_executor.py", "with m.If(cut_short):                 # refused: nothing moved",
           "with m.If(checker.error.valid):", "WRITE_BACK check pass: a list read error "
           "does not refuse the command",
           ((X + "::test_row_executor_cut_short_by_a_list_read_error",), (DEV_ERRORS,)), slow=True),
    Mutant("EX-4", D + "dump_executor.py", "m.d.sync += record.eq(writer.error)",
           "m.d.sync += record.valid.eq(0)", "DUMP: the write error not reported",
           ((DEV_DUMP_ERR,),), slow=True),
    Mutant("EX-5", D + "lookup_executor.py", "self.learn.eq(job.params.opcode == Opcode.LEARN),",
           "self.learn.eq(job.params.opcode != Opcode.LOOKUP),",
           "LEARN/LOOKUP mode from the wrong compare",
           ((DEV_LOOKUPS,),), slow=True,
           equivalent="the executor is started only for LEARN and LOOKUP (the decoder's "
                      "kind), so != LOOKUP is == LEARN for every opcode it sees"),
    Mutant("RM-1", M + "row_mover.py", "keys_over = (keys_left == 0) | (self.stop & ~self.keys.valid)",
           "keys_over = (keys_left == 0)", "RowMover: stop ignored (a cut-short GATHER hangs)",
           ((X + "::test_row_executor_cut_short_by_a_list_read_error",), (DEV_ERRORS,)),
           slow=True),
]


# ---- the runner ---------------------------------------------------------------------------
def sync_copy(workdir: Path):
    """Copy the repository's tracked and untracked (not ignored) files into ``workdir``
    (its ignored folders, e.g. ``sim_build``, are kept there between runs)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"],
                           cwd=REPO_ROOT, check=True, capture_output=True).stdout
    for name in files.decode().split("\0"):
        if not name:
            continue
        src, dst = REPO_ROOT / name, workdir / name
        if not src.is_file():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copy2(src, dst)


def apply(mutant: Mutant, text: str) -> str:
    """``text`` with the mutant applied; raises ``ValueError`` when ``find`` is not one
    line's piece, not found, or ambiguous."""
    if "\n" in mutant.find:
        raise ValueError(f"{mutant.id}: find spans lines")
    starts = [m.start() for m in re.finditer(re.escape(mutant.find), text)]
    if not starts:
        raise ValueError(f"{mutant.id}: {mutant.find!r} not in {mutant.file}")
    if mutant.nth is None and len(starts) != 1:
        raise ValueError(f"{mutant.id}: {mutant.find!r} occurs {len(starts)} times")
    at = starts[mutant.nth or 0]
    return text[:at] + mutant.replace + text[at + len(mutant.find):]


def _run(cmd, cwd, timeout, slow):
    """``(rc or None on timeout, output)``; the command's process group is killed on timeout."""
    env = dict(os.environ, PYTHONPATH=str(cwd), PYTHONDONTWRITEBYTECODE="1")
    if slow:
        cmd = ["nice", "-n", "10"] + cmd
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out.decode(errors="replace")


_HANG = re.compile(r"BudgetExceeded|cycle budget|hang", re.I)


def _killer(out):
    """The first failing test of a pytest run's output and what it failed with."""
    # --tb=line prints "path:line: message" per failure; the summary names the test.
    where = [ln for ln in out.splitlines() if re.match(r"^/?\S+\.py:\d+: ", ln)]
    for line in out.splitlines():
        if re.match(r"^(FAILED|ERROR) \S+::", line):     # pytest's summary, not a log line
            test = line.split()[1]
            what = line.split(" - ", 1)[1] if " - " in line else ""
            if where:
                what = (what + " | " if what else "") + where[0].split(": ", 1)[1]
            return test, what
    return None, ""


def pytest_cmd(args):
    return [sys.executable, "-m", "pytest", "-q", "-x", "-rfE", "--tb=line",
            "-p", "no:cacheprovider", *args]


def run_mutant(mutant: Mutant, workdir: Path, timeout: float):
    """Apply ``mutant`` in ``workdir``, run its tests, restore the file; a result dict."""
    path = workdir / mutant.file
    original = path.read_text()
    started = time.perf_counter()
    result = {"id": mutant.id, "file": mutant.file, "find": mutant.find,
              "replace": mutant.replace, "why": mutant.why, "equivalent": mutant.equivalent,
              "slow": mutant.slow}
    try:
        mutated = apply(mutant, original)
        path.write_text(mutated)
        try:
            compile(mutated, str(path), "exec")
        except SyntaxError as exc:
            result.update(status="invalid", detail=str(exc))
            return result
        result.update(status="survived", detail="")
        for args in mutant.tests:
            rc, out = _run(pytest_cmd(list(args)), workdir, timeout, mutant.slow)
            if rc is None:
                result.update(status="timeout", detail=f"runner timeout {timeout:.0f} s: "
                              f"{' '.join(args)}")
                break
            if rc != 0:
                test, what = _killer(out)
                if test is None:    # no test failed: collection or usage error
                    result.update(status="error", detail=out[-600:])
                    break
                hang = bool(_HANG.search(what))
                if not hang and "Timeout" in what:
                    hang = True
                result.update(status="killed", killer=test, detail=what[:200],
                              hang_reported=hang)
                break
    finally:
        path.write_text(original)
        result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def markdown(results):
    """The results as a markdown table."""
    rows = ["| Mutant | Where | Change | Why plausible | Result | Killed by / why equivalent |",
            "|---|---|---|---|---|---|"]

    def cell(s):
        return str(s).replace("|", "\\|").replace("\n", " ")

    for r in results:
        if r["status"] == "killed":
            test = r["killer"].split("::")[-1]
            by = f"`{test}`" + (" (hang, reported by the test's cycle budget)"
                                if r.get("hang_reported") else "")
        elif r["equivalent"]:
            by = "equivalent: " + r["equivalent"]
        else:
            by = r.get("detail", "")
        change = f"`{r['find'].strip()}` → `{r['replace'].strip()}`"
        rows.append(f"| {r['id']} | `{r['file'].split('/')[-1]}` | {cell(change)} | "
                    f"{cell(r['why'])} | {r['status']} | {cell(by)} |")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated mutant ids")
    ap.add_argument("--fast", action="store_true", help="skip the Verilator mutants")
    ap.add_argument("--slow-only", action="store_true", help="only the Verilator mutants")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    ap.add_argument("--timeout", type=float, default=300, help="per fast command, seconds")
    ap.add_argument("--slow-timeout", type=float, default=900,
                    help="per Verilator command (build included), seconds")
    ap.add_argument("--no-baseline", action="store_true",
                    help="do not first check that the fast commands pass unmutated")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args(argv)

    chosen = MUTANTS
    if args.only:
        ids = set(args.only.split(","))
        unknown = ids - {m.id for m in MUTANTS}
        if unknown:
            ap.error(f"unknown mutants {sorted(unknown)}")
        chosen = [m for m in MUTANTS if m.id in ids]
    if args.fast:
        chosen = [m for m in chosen if not m.slow]
    if args.slow_only:
        chosen = [m for m in chosen if m.slow]
    if args.list:
        for m in chosen:
            print(f"{m.id:7} {m.file}: {m.find!r} -> {m.replace!r}  ({m.why})")
        return 0

    args.workdir.mkdir(parents=True, exist_ok=True)
    sync_copy(args.workdir)
    for m in chosen:                 # every mutant must apply before anything runs
        apply(m, (args.workdir / m.file).read_text())
    if not args.no_baseline:
        for cmd in sorted({tuple(t) for m in chosen if not m.slow for t in m.tests}):
            rc, out = _run(pytest_cmd(list(cmd)), args.workdir, args.timeout, False)
            if rc != 0:
                print(f"baseline fails: {' '.join(cmd)}\n{out[-2000:]}", file=sys.stderr)
                return 2
    results = []
    for m in chosen:
        r = run_mutant(m, args.workdir, args.slow_timeout if m.slow else args.timeout)
        results.append(r)
        print(f"{r['id']:7} {r['status']:9} {r.get('killer', '')} {r['seconds']} s",
              file=sys.stderr, flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    print(markdown(results))
    killed = sum(r["status"] == "killed" for r in results)
    equivalent = sum(r["status"] != "killed" and bool(r["equivalent"]) for r in results)
    print(f"\n{len(results)} mutants: {killed} killed, {equivalent} equivalent, "
          f"{len(results) - killed - equivalent} other")
    return 0


if __name__ == "__main__":
    sys.exit(main())
