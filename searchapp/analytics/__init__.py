"""The search analytics page in admin: filters, figures from the rollups, SVG charts with promotions marked."""
