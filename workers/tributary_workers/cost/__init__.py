"""The cost model (model.py: pure arithmetic), its calibration, and run planning (docs/cost.md)."""
