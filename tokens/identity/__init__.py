"""Organisation sign-in: OpenID Connect (``oidc``), the provider's metadata (``provider``), the sign-in page
and local passwords (``signin``), and recent sign-in for sensitive steps (``recent``)."""
