"""What the host has to offer, read once for the trainer's command line and the benchmark."""

__all__ = ["host_memory_bytes"]


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
