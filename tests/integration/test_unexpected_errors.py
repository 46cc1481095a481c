"""An unexpected exception is a logged 500 in the one error format, never an HTML page."""

import logging

from app.products import interface as products


def test_unexpected_exception_is_a_problem_500_with_a_logged_traceback(client, monkeypatch, caplog):
    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(products, "list_products", broken)
    with caplog.at_level(logging.ERROR, logger="app.errors"):
        response = client.get("/v1/products")
    assert response.status_code == 500
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["code"] == "internal_error"
    assert "boom" not in body["detail"]
    assert any(record.exc_info and "boom" in str(record.exc_info[1]) for record in caplog.records)
