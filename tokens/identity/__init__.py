"""Organisation sign-in: identities from the organisation's provider, and SCIM provisioning."""
