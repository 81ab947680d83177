"""HRDV: real-time data warehouse for CRM customer interactions."""
