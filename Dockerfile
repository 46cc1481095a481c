# Production image: gunicorn serving wsgi:app as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv/storefront

COPY pyproject.toml requirements.lock ./
COPY app ./app
RUN pip install -c requirements.lock . && useradd --system --uid 10001 storefront
COPY wsgi.py seed.py gunicorn.conf.py ./
COPY migrations ./migrations

USER storefront
EXPOSE 3000
CMD ["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]
