"""The operator console at ``/dashboard``: server-rendered pages (Jinja2, no build step) over
the same data as the call API, behind a login that turns the admin token into a session
cookie."""
