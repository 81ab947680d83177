"""Software-defined assets, one module per business entity; cdc.py builds what entities share."""
