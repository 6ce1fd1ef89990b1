"""The report kit: one stylesheet inlined, autoescaping, data-URI images."""

from __future__ import annotations

import base64

from PIL import Image

from common.html import looks_numeric, png_data_uri, render_page


def test_a_page_inlines_the_one_stylesheet_and_escapes_text():
    page = render_page("common", "base.html", title="<script>alert(1)</script>")
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<style>" in page and ".mode{" in page and "<link" not in page


def test_images_become_png_data_uris():
    uri = png_data_uri(Image.new("RGB", (3, 2), (255, 0, 0)))
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]).startswith(b"\x89PNG")


def test_numeric_cells():
    assert looks_numeric("1,234") and looks_numeric("$0.12") and looks_numeric("-15.0%")
    assert looks_numeric(3) and not looks_numeric(True)
    assert not looks_numeric("15.0%, 45.0%") and not looks_numeric("glass")
