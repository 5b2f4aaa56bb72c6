"""An ``--api`` the client cannot use (an http:// URL, a malformed one) is said in one line,
exit 2, by every command that talks to a node: each printed a Python traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from iomtnode.cli import app

URLS = {
    "http://127.0.0.1:7545": "the API speaks websocket",
    "https://node.example:7545": "the API speaks websocket",
    "ws://[::1": "Invalid IPv6 URL",
    "127.0.0.1:port": "Port could not be cast",
}


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("command", [["status"], ["blocks", "follow", "--retry-for", "0"]])
def test_an_api_url_the_client_cannot_use_is_said(command, url):
    result = CliRunner().invoke(app, [*command, "--api", url])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: cannot use the URL ")
    assert url in result.stderr  # as given, or with ws:// and the path added
    assert URLS[url] in result.stderr
    assert "Traceback" not in result.output
