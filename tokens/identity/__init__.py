"""Organisation sign-in: OpenID Connect (``oidc``), the provider's metadata (``provider``), the sign-in page
and local passwords (``signin``), recent sign-in for sensitive steps (``recent``), and SCIM provisioning
(``scim`` and its helpers)."""
