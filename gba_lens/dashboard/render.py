"""Write the static site: ``index.html`` plus ``feature_NNNNN.html`` per feature.

Every page is one self-contained file: the stylesheet, the script (``gba_lens/assets/dashboard``)
and the page's data (JSON) are inlined, so pages open from ``file://`` with no server, network
or CDN, and one page can be shown inside a notebook through an iframe ``srcdoc``.
"""

from __future__ import annotations

import html
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["ASSET_DIR", "page_html", "feature_filename", "write_site"]

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "dashboard"


@lru_cache(maxsize=1)
def _assets() -> tuple[str, str]:
    return (ASSET_DIR / "dashboard.css").read_text(), (ASSET_DIR / "dashboard.js").read_text()


def _json_for_script(data: Any) -> str:
    # "<" escaped so that no string in the data can close the <script> element.
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def feature_filename(feature: int) -> str:
    return f"feature_{feature:05d}.html"


def page_html(data: dict[str, Any], title: str) -> str:
    """One complete HTML document rendering ``data`` (``kind``: index, feature or bundle)."""
    css, js = _assets()
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>"
        f"<style>{css}</style></head><body><div id=\"app\"></div>"
        f"<script type=\"application/json\" id=\"dashboard-data\">{_json_for_script(data)}</script>"
        f"<script>{js}</script></body></html>\n"
    )


def write_site(
    out_dir: Path, meta: dict[str, Any], rows: list[dict[str, Any]], pages: dict[int, dict[str, Any]]
) -> Path:
    """Write the index and the feature pages; returns the path of ``index.html``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index = out_dir / "index.html"
    index.write_text(page_html({"kind": "index", "meta": meta, "index": rows}, f"Features of {meta['hook']}"), "utf-8")
    page_meta = {k: v for k, v in meta.items() if k != "pages"}  # the page list stays in the index
    for feature, page in pages.items():
        (out_dir / feature_filename(feature)).write_text(
            page_html({"kind": "feature", "meta": page_meta, "feature": page}, f"Feature #{feature}"), "utf-8"
        )
    (out_dir / "dashboard.json").write_text(json.dumps({"meta": meta, "index": rows}, allow_nan=False), "utf-8")
    return index
