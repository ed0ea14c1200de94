"""Transports that hand signed messages to a provider (SMTP, Amazon SES)."""
