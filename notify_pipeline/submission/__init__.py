"""SMTP submission: services with `advanced.smtp` send through a mail client instead of the API.

An authenticated SMTP session (STARTTLS first, then AUTH with a per-service credential) hands
each accepted message to a `Submitter`, which puts one send request on the service's inbox.
"""
