"""The one exception of the synthesis flow."""

__all__ = ["SynthError", "DoesNotFit"]


class SynthError(Exception):
    """A failure the flow reports as one line (missing tool, unknown configuration, a tool
    that failed, a design that does not fit); ``python -m hotline_hw.synth`` prints its
    message instead of a traceback."""


class DoesNotFit(SynthError):
    """The design needs more of a resource than the part (or a ``--limit``) has.

    ``overflows`` lists ``(resource, used, available)`` for every resource that ran out.
    """

    def __init__(self, where: str, overflows):
        self.where = where
        self.overflows = list(overflows)
        parts = [f"{res} {used} of {avail} ({used - avail} too many, {100 * used / avail:.0f} %)"
                 if avail else f"{res} {used} of 0"
                 for res, used, avail in self.overflows]
        super().__init__(f"does not fit {where}: " + "; ".join(parts))
