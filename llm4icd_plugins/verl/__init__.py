"""verl glue: the reward adapter, the PHI dataset and the CPU platform. Import submodules directly;
this package itself imports nothing from verl, so the reward loads in any worker."""
