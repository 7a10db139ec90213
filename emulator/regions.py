"""The Azure regions the emulator knows, in the shape `GET /subscriptions/{id}/locations` returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Region:
    name: str
    display_name: str
    geography: str
    geography_group: str
    physical_location: str
    latitude: str
    longitude: str
    paired: str


REGIONS: tuple[Region, ...] = (
    Region("eastus", "East US", "United States", "US", "Virginia", "37.3719", "-79.8164", "westus"),
    Region("eastus2", "East US 2", "United States", "US", "Virginia", "36.6681", "-78.3889", "centralus"),
    Region("centralus", "Central US", "United States", "US", "Iowa", "41.5908", "-93.6208", "eastus2"),
    Region("westus", "West US", "United States", "US", "California", "37.783", "-122.417", "eastus"),
    Region("westus2", "West US 2", "United States", "US", "Washington", "47.233", "-119.852", "westcentralus"),
    Region("westeurope", "West Europe", "Europe", "Europe", "Netherlands", "52.3667", "4.9", "northeurope"),
    Region("northeurope", "North Europe", "Europe", "Europe", "Ireland", "53.3478", "-6.2597", "westeurope"),
    Region("francecentral", "France Central", "France", "Europe", "Paris", "46.3772", "2.3730", "francesouth"),
    Region("uksouth", "UK South", "United Kingdom", "Europe", "London", "50.941", "-0.799", "ukwest"),
    Region("southeastasia", "Southeast Asia", "Asia Pacific", "Asia Pacific", "Singapore", "1.283", "103.833", "eastasia"),
    Region("japaneast", "Japan East", "Japan", "Asia Pacific", "Tokyo, Saitama", "35.68", "139.77", "japanwest"),
    Region("australiaeast", "Australia East", "Australia", "Asia Pacific", "New South Wales", "-33.86", "151.2094", "australiasoutheast"),
)  # fmt: skip

_BY_NAME = {r.name: r for r in REGIONS}


def normalize(location: str) -> str:
    """ARM treats `East US`, `eastus` and `EastUS` alike."""
    return location.replace(" ", "").lower()


def find(location: str) -> Region | None:
    return _BY_NAME.get(normalize(location))


def location_json(subscription_id: str, region: Region) -> dict[str, Any]:
    return {
        "id": f"/subscriptions/{subscription_id}/locations/{region.name}",
        "name": region.name,
        "type": "Region",
        "displayName": region.display_name,
        "regionalDisplayName": f"({region.geography_group}) {region.display_name}",
        "metadata": {
            "regionType": "Physical",
            "regionCategory": "Recommended",
            "geography": region.geography,
            "geographyGroup": region.geography_group,
            "longitude": region.longitude,
            "latitude": region.latitude,
            "physicalLocation": region.physical_location,
            "pairedRegion": [
                {"name": region.paired, "id": f"/subscriptions/{subscription_id}/locations/{region.paired}"}
            ],
        },
    }
