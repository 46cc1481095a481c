"""The smallest Flask app: the baseline that bench/catalog.py compares the catalog with."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello() -> str:
    return "hello"
