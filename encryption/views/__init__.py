"""The portal's pages and htmx fragments, one module per topic; urls.py imports them from here."""

from __future__ import annotations

from encryption.views.accounts import account_list

__all__ = ["account_list"]
