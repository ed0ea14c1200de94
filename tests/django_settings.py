"""A small Django project's settings, as a service would write them for the notify backend."""

SECRET_KEY = "tests-only-not-secret"
INSTALLED_APPS: list[str] = []
USE_TZ = True

EMAIL_BACKEND = "notify_pipeline.client.django.EmailBackend"
DEFAULT_FROM_EMAIL = "webmaster@localhost"
NOTIFY_SERVICE = "lookup-notices"
NOTIFY_INBOX = "file:///nonexistent/inbox"  # each test points it at its own deployment
NOTIFY_SERVICE_ACCOUNT = "lookup-prod@lookup-prod-1234.iam.gserviceaccount.com"
NOTIFY_FROM_EMAIL = "Lookup Notices <lookup@notify.example.org>"
