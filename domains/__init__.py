"""The insurance mesh's domains: one package (and one Dagster code location) per business domain."""
