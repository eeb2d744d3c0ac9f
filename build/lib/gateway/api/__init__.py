"""The Management API (`/api/v2`): tenants, hooks, secrets, signing secrets, deliveries."""
