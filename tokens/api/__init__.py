"""The JSON API: views, URLs, the OpenAPI document and the error vocabulary they share."""
