"""Every staged CDC entity by name: what commands that take an entity (`hrdv drift`, `hrdv resync`)
choose from. A new entity module adds its StagedEntity here."""
from hrdv_assets.cdc import StagedEntity
from hrdv_assets.interactions import INTERACTIONS

STAGED: dict[str, StagedEntity] = {entity.name: entity for entity in (INTERACTIONS,)}
