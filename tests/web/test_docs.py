"""/docs works on a private network: the page and everything it loads come from this server."""

import re
from urllib.parse import urljoin, urlsplit

import httpx

ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\s*:\s*["']([^"']+)["']""")


async def test_docs_reference_only_this_server(client: httpx.AsyncClient, base_url: str) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text
    assert '"validatorUrl": null' in page.text  # no call out to swagger.io's validator
    references = [a or b for a, b in ASSET.findall(page.text)]
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(references)
    assert "/openapi.json" in references
    for reference in references:
        url = urljoin(f"{base_url}/docs", reference)
        assert urlsplit(url).netloc == urlsplit(base_url).netloc, reference
        asset = await client.get(url)
        assert asset.status_code == 200, reference
        assert len(asset.content) > 100, reference


async def test_assets_have_their_types(client: httpx.AsyncClient) -> None:
    js = await client.get("/docs/assets/swagger-ui-bundle.js")
    css = await client.get("/docs/assets/swagger-ui.css")
    assert "javascript" in js.headers["content-type"]
    assert css.headers["content-type"].startswith("text/css")
    missing = await client.get("/docs/assets/nothing.js")
    assert missing.status_code == 404 and missing.json()["error"] == "Not found"
    posted = await client.post("/docs/assets/swagger-ui.css")
    assert posted.status_code == 405 and posted.headers["allow"] == "GET, HEAD"
    assert posted.json() == {"error": "Method not allowed"}
