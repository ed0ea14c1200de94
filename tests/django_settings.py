"""A small Django project's settings, as a service would write them for the notify backend."""

SECRET_KEY = "tests-only-not-secret"
INSTALLED_APPS: list[str] = []
USE_TZ = True
# Django sets the process's TZ from TIME_ZONE (default America/Chicago), and emulators started
# later in the same test process inherit it: fake-gcs-server then answers in local time.
TIME_ZONE = "UTC"

EMAIL_BACKEND = "notify_pipeline.client.django.EmailBackend"
DEFAULT_FROM_EMAIL = "webmaster@localhost"
NOTIFY_SERVICE = "lookup-notices"
NOTIFY_INBOX = "file:///nonexistent/inbox"  # each test points it at its own deployment
NOTIFY_SERVICE_ACCOUNT = "lookup-prod@lookup-prod-1234.iam.gserviceaccount.com"
NOTIFY_FROM_EMAIL = "Lookup Notices <lookup@notify.example.org>"
