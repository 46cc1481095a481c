"""`python seed.py [--count N] [--reset] [--yes]`: the same as `flask --app wsgi seed`."""

from app import create_app
from app.seeding import seed_command

if __name__ == "__main__":
    with create_app().app_context():
        seed_command()
