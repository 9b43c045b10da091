"""gunicorn settings, read from the working directory by every `gunicorn config.wsgi` (dev.py
run, the image): the access log shows each request's path but never its query string or
referrer, where tokens sometimes travel."""

access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(a)s"'
