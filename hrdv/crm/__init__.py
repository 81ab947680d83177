"""The CRM source domain: schema and reference data (reference.py), the bulk initial load
(bulk_load.py) and the live/replay generator (live.py, behaviour.py)."""
