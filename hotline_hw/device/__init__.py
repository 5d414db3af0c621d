"""The device around the lookup engine: the command sequencer, its decoder and one executor
per kind of command (``docs/device.md``, "Micro-architecture")."""
