"""What the host has to offer, read once for the trainer's command line and the benchmark."""

__all__ = ["host_memory_bytes", "cpu_model"]


def host_memory_bytes(field="MemAvailable"):
    """``/proc/meminfo``'s ``field`` (``MemAvailable``, ``MemTotal``, ...) in bytes, or
    ``None`` where it is unknown (no /proc, no such field)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_model():
    """``/proc/cpuinfo``'s first ``model name`` (``"Intel(R) Xeon(R) ..."``), or ``None``
    where it is unknown; benchmarks print it with their figures."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
