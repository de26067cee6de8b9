"""Products, flash sales, atomic stock reservation and orders."""

from .catalog import Catalog
from .module import Commerce
from .settings import CommerceSettings

__all__ = ["Catalog", "Commerce", "CommerceSettings"]
