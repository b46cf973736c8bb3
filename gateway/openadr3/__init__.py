"""The OpenADR 3 (3.0.1 and 3.1.0) VEN: REST and JSON, OAuth2 client credentials, webhooks."""
