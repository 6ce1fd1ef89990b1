"""One kit for the project's HTML reports: jinja2 templates and one stylesheet.

Every report (a pipeline run's report.html, a reasoner comparison, the closed
loop, the monitor) is one self-contained file: the stylesheet is inlined, images
are data URIs, nothing is fetched. Templates extend `base.html` and use the
macros of `macros.html` (tables, figures) from this package's `templates/`
folder; a report's own template lives in a `templates/` folder of its package.
Autoescaping is on, so text a model wrote (mode names, explanations) can never
inject markup.

    from common.html import png_data_uri, render_page

    page = render_page("failtax", "run_report.html", title="...", modes=[...])
"""

from __future__ import annotations

import base64
import functools
import io
from typing import Any

import jinja2

STYLESHEET = "report.css"


@functools.cache
def _environment(package: str) -> jinja2.Environment:
    loaders = [jinja2.PackageLoader(package, "templates")] if package != __package__ else []
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader([*loaders, jinja2.PackageLoader(__package__, "templates")]),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt field is an error, not an empty cell
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.tests["numeric"] = looks_numeric
    return env


def render_page(package: str, template: str, **context: Any) -> str:
    """Render one report page.

    Args:
        package: the package whose `templates/` folder holds `template`
            (e.g. "failtax", "failtax.compare", "loop"); `base.html`,
            `macros.html` and the stylesheet come from this kit.
        template: the template's file name.
        **context: the template's variables. Plain strings are escaped; pass
            `markupsafe.Markup` only for markup this code built itself.

    Returns:
        The HTML document, with the stylesheet inlined.
    """
    return _environment(package).get_template(template).render(**context)


def png_data_uri(image: Any) -> str:
    """`data:image/png;base64,...` of a matplotlib figure, a PIL image or PNG bytes.

    A figure is saved at 110 dpi with a tight bounding box and left open; the
    caller closes it.
    """
    if isinstance(image, bytes):
        data = image
    else:
        buf = io.BytesIO()
        if hasattr(image, "savefig"):
            image.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        else:
            image.save(buf, format="PNG")
        data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def looks_numeric(value: Any) -> bool:
    """Whether a table cell reads as a number (right-aligned): "1,234", "$0.12", "3.5", "-15.0%"."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    text = str(value).replace(",", "").replace("$", "").strip().removesuffix("%")
    try:
        float(text)
    except ValueError:
        return False
    return True
