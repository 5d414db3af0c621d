"""``python -m hotline_hw``: list the named configurations with their derived widths."""

from .config import CONFIGS, DEVICE_CONFIGS

print("EAL / lookup-engine configurations (EALConfig):")
for name, cfg in CONFIGS.items():
    print(f"  {name:8s} {cfg.describe()}")
print("device configurations (DeviceConfig: host interface | EAL):")
for name, dcfg in DEVICE_CONFIGS.items():
    print(f"  {name:8s} {dcfg.describe()}")
