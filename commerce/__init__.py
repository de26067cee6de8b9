"""Products, flash sales, atomic stock reservation and orders."""
