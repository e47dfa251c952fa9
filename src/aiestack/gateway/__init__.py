"""The gateway wing: virtual keys and tenants, rate limits and budgets, routing, fallbacks, breakers."""
