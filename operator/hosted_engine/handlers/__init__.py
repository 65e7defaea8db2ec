"""Thin kopf handlers: parse, ask logic, let adapters act. Importing this package registers them."""
