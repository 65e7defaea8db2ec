"""The only code that talks to the outside: the Kubernetes API, BMCs, SMTP, object storage."""
