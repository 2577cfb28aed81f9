"""The generated pages in a real browser: headless Chromium renders them from file://.

The checks run on the DOM after the page's script ran (``--dump-dom``): index rows, sorting
through the URL hash (what clicking a column header writes), highlighted tokens with the max
marked, the histogram SVG. Screenshots are saved under the test's tmp_path.
"""

import json
import re
import shutil
import subprocess

import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.sae import SAEMetadata

from gba_lens.dashboard import build
from gba_lens.models.stdlib_lm import load_stdlib_lm, stdlib_token_dataset

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
# A developer machine without a browser skips these, saying what to install; CI never does:
# .ci/run installs Debian's chromium when it is missing.
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not found: install it with `apt-get install -y chromium`"
)
HOOK = "blocks.1.hook_resid_pre"
D_SAE = 48


def chromium(*args: str) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    torch.manual_seed(0)
    model = load_stdlib_lm()
    details = {"n_groups": 4, "highest_target": 0.1, "lowest_target": 0.001}
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=128, d_sae=D_SAE, metadata=SAEMetadata(
        training_architecture="gba", training_architecture_details=details, hook_name=HOOK)))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.15)
        sae.threshold.fill_(0.6)
        sae.W_dec.copy_(sae.W_enc.T)
    tokens = stdlib_token_dataset(model.tokenizer, 32, "val", max_tokens=4096)
    out = tmp_path_factory.mktemp("site")
    return build(sae, model, None, tokens, out, top_k=6, progress=False)


def rows_of(dom: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-id="(\d+)"', dom)]


def test_index_rows_sorting_and_filter(site, tmp_path):
    index = json.loads((site.out_dir / "dashboard.json").read_text())["index"]
    assert len(index) == D_SAE
    url = site.index_path.as_uri() + "#sort=freq-desc"
    dom = chromium("--dump-dom", url)
    shown = rows_of(dom)
    assert sorted(shown) == list(range(D_SAE))  # every feature has a row
    linked = sorted(int(i) for i in re.findall(r'<a href="feature_(\d+)\.html"', dom))
    assert linked == site.features  # ... and a link where it has a page
    assert shown == [r["id"] for r in sorted(index, key=lambda r: (-r["freq"], r["id"]))]
    assert re.search(r'<th data-key="freq" class="sorted-desc', dom)
    assert "freq/target" in dom and "group 3 (target 0.100%)" in dom  # GBA columns and filter
    # another column, ascending, with dead features hidden
    other = rows_of(chromium("--dump-dom", site.index_path.as_uri() + "#sort=max-asc&alive=1"))
    alive = [r for r in index if not r["dead"]]
    assert other == [r["id"] for r in sorted(alive, key=lambda r: (r["max"], r["id"]))]
    chromium("--window-size=1280,800", f"--screenshot={tmp_path / 'index.png'}", url)
    assert (tmp_path / "index.png").stat().st_size > 10_000


def test_feature_page(site, tmp_path):
    feature = max(site.pages, key=lambda f: site.pages[f]["count"])
    page = site.pages[feature]
    path = site.out_dir / f"feature_{feature:05d}.html"
    dom = chromium("--dump-dom", path.as_uri())
    top = re.search(r'<div class="card" id="top-contexts">(.*?)</div></div>', dom, re.S).group(0)
    contexts = re.findall(r'<div class="ctx">', top)
    assert len(contexts) == len(page["top"]) > 0
    assert len(re.findall(r'class="t max"', top)) == len(page["top"])  # one marked token each
    shaded = re.findall(r'style="background: rgba\(255, 128, 0, ([0-9.]+)\)"', top)
    assert shaded and max(float(a) for a in shaded) == 1.0  # the top token at full shade
    hist = re.search(r'<svg[^>]*id="histogram".*?</svg>', dom, re.S).group(0)
    assert hist.count("<rect") >= 1
    assert 'id="band-samples"' in dom and 'id="logits"' in dom and 'id="nearest"' in dom
    assert 'id="freq-vs-target"' in dom
    chromium("--window-size=1280,1000", f"--screenshot={tmp_path / 'feature.png'}", path.as_uri())
    assert (tmp_path / "feature.png").stat().st_size > 10_000


def test_notebook_bundle(site, tmp_path):
    """What show() puts in the iframe: the index and feature pages in one document."""
    from gba_lens.dashboard import bundle_html

    feature = site.features[0]
    path = tmp_path / "bundle.html"
    path.write_text(bundle_html(site, max_features=4, start=feature))
    dom = chromium("--dump-dom", path.as_uri())
    assert f"Feature #{feature}" in dom and 'id="top-contexts"' in dom and 'class="t max"' in dom
    assert 'href="#"' in dom  # the link back to the index stays inside the document
