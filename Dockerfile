# Production image: gunicorn serving wsgi:app as a non-root user, in any run mode (APP_MODULES).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Production unless told otherwise: the container refuses to start without a JWT secret of its
# own, PostgreSQL and a mail relay, rather than serve the development defaults on 0.0.0.0.
ENV APP_ENV=production
WORKDIR /srv/storefront

# Every package pinned by the lock file. Installed editable so that `app` is imported from
# /srv/storefront/app, next to the migrations/ directory the app locates relative to itself.
COPY pyproject.toml requirements.lock ./
COPY app ./app
RUN pip install -c requirements.lock -e . \
    && useradd --system --uid 10001 --no-create-home storefront
COPY wsgi.py seed.py gunicorn.conf.py ./
COPY migrations ./migrations
COPY scripts/healthcheck.py ./scripts/

USER storefront
# API_PORT, PRODUCTS_SERVICE_PORT, CART_SERVICE_PORT, ACCOUNTS_SERVICE_PORT: gunicorn.conf.py binds
# the one APP_MODULES calls for.
EXPOSE 3000 3001 3002 3003
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=5 CMD ["python", "scripts/healthcheck.py"]
CMD ["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]
