"""``python -m hotline_hw``: list the named configurations with their derived widths."""

from hotline_spec.config import CONFIGS, DEVICE_CONFIGS, FRAGMENTER_CONFIGS

print("EAL / lookup-engine configurations (EALConfig):")
for name, cfg in CONFIGS.items():
    print(f"  {name:8s} {cfg.describe()}")
print("device configurations (DeviceConfig: host interface | EAL):")
for name, dcfg in DEVICE_CONFIGS.items():
    print(f"  {name:8s} {dcfg.describe()}")
print("classifier/fragmenter configurations (FragmenterConfig: de-dup table | EAL):")
for name, fcfg in FRAGMENTER_CONFIGS.items():
    print(f"  {name:12s} {fcfg.describe()}")
