"""The one Django app: bearer tokens, legacy keys, their policy, usage, events, sign-in and the API."""
