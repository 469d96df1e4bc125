"""Apply every patch (``VERL_USE_EXTERNAL_MODULES=verl_patches.activate`` imports this in each process)."""

from verl_patches import apply_all

apply_all()
