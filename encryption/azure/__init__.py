"""Keyward's Azure gateway, split by Azure service. Import it as `encryption.azure_gateway`, its one public
face; nothing outside this package imports an Azure SDK."""

from __future__ import annotations
