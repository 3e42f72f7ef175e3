"""Talks to the Sugon API: transport, the request/retry/error conversation, logins, tokens, the job list."""
